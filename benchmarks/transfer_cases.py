"""The four transfer-learning cases, measured offline on the bundled sample families.

1. Pretrain a source VGG16 from scratch on `shapes` (the toolkit's own recipe: VGG16-BN, folded).
2. Targets: `more-shapes` (new classes, same family: *similar*) and `textures` (*different*), each
   *small* and *large*. Fine-tune each with every case and with `--case auto`, from the source run.
3. Report test top-1 (the test split, which no decision saw), training seconds, and auto's pick.

Also: the same small targets from scratch (`--weights none`), the baseline transfer has to beat.

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

from vgg_deploy.benchmark.machine import describe_machine
from vgg_deploy.finetune import FinetuneConfig, cases, finetune
from vgg_deploy.sample_data import write_sample_data

TARGETS = {"similar": "more-shapes", "different": "textures"}


def run_finetune(data: Path, out: Path, **options) -> dict:
    if out.exists():
        shutil.rmtree(out)  # a run folder is never overwritten by finetune itself
    started = time.perf_counter()
    info = finetune(FinetuneConfig(data=str(data), out=str(out), workers=0, **options))
    return {"case": info["case"], "decision": info["case_decision"]["reasons"],
            "evidence": info["case_decision"].get("evidence", {}),
            "val_top1": info["metrics"]["val"]["top1"], "test_top1": info["metrics"]["test"]["top1"],
            "test_images": info["metrics"]["test"]["images"], "kept_epoch": info["metrics"]["epoch"],
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/vgg-transfer-cases"))
    parser.add_argument("--json", type=Path, default=Path(__file__).parent / "results" / "transfer_cases.json")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--source-images", type=int, default=300, help="per class")
    parser.add_argument("--source-epochs", type=int, default=12)
    parser.add_argument("--small-images", type=int, default=30, help="per class, before the split")
    parser.add_argument("--large-images", type=int, default=200, help="per class, before the split")
    parser.add_argument("--small-epochs", type=int, default=10)
    parser.add_argument("--large-epochs", type=int, default=5)
    parser.add_argument("--small-max-per-class", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    args.out.mkdir(parents=True, exist_ok=True)
    common = dict(image_size=args.image_size, seed=args.seed, small_max_per_class=args.small_max_per_class)

    source_data = write_sample_data(args.out / "data-shapes", images_per_class=args.source_images, family="shapes")
    source_run = args.out / "source"
    if not (source_run / "model.json").is_file():
        source = run_finetune(source_data, source_run, weights="none", epochs=args.source_epochs,
                              val_split=0.1, test_split=0.1, **common)
    else:
        info = json.loads((source_run / "model.json").read_text())
        source = {"test_top1": info["metrics"]["test"]["top1"], "val_top1": info["metrics"]["val"]["top1"],
                  "seconds": None}
    print(f"source (shapes, from scratch): test top-1 {source['test_top1']:.3f}", flush=True)

    results = []
    for similarity, family in TARGETS.items():
        for size, images, epochs in (("small", args.small_images, args.small_epochs),
                                     ("large", args.large_images, args.large_epochs)):
            data = write_sample_data(args.out / f"data-{family}-{size}", images_per_class=images, family=family)
            quadrant = {"target": f"{size}-{similarity}", "family": family, "images_per_class": images,
                        "epochs": epochs, "runs": {}}
            for case in ("auto", *cases.CASES):
                quadrant["runs"][case] = run_finetune(data, args.out / f"{family}-{size}-{case}",
                                                      weights=str(source_run), case=case, epochs=epochs, **common)
                print(f"{size}-{similarity} {case}: {quadrant['runs'][case]}", flush=True)
            if size == "small":
                quadrant["runs"]["scratch"] = run_finetune(data, args.out / f"{family}-{size}-scratch", weights="none",
                                                           epochs=epochs, **common)
            best = max(cases.CASES, key=lambda c: quadrant["runs"][c]["test_top1"])
            auto = quadrant["runs"]["auto"]
            quadrant["best_case"] = best
            quadrant["auto_minus_best_points"] = round(100 * (auto["test_top1"] - quadrant["runs"][best]["test_top1"]), 2)
            results.append(quadrant)

    report = {"machine": describe_machine(), "settings": {k: str(v) if isinstance(v, Path) else v
                                                          for k, v in vars(args).items()},
              "source": source, "quadrants": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown_table(report))


def markdown_table(report: dict) -> str:
    lines = ["| target | auto picked | " + " | ".join(cases.CASES) + " | scratch | auto − best |",
             "|---|---|" + "---|" * len(cases.CASES) + "---|---|"]
    for q in report["quadrants"]:
        runs = q["runs"]
        cells = [f"{runs[c]['test_top1']:.3f} ({runs[c]['seconds']:.0f}s)" for c in cases.CASES]
        scratch = f"{runs['scratch']['test_top1']:.3f}" if "scratch" in runs else "—"
        lines.append(f"| {q['target']} ({q['family']}, {q['images_per_class']}/class) | {runs['auto']['case']} | "
                     + " | ".join(cells) + f" | {scratch} | {q['auto_minus_best_points']:+.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
