"""Structured pruning, measured: accuracy on a trained run, and INT8 latency at 224 px, dense against pruned.

    python benchmarks/prune_bench.py accuracy RUN --targets 0.7,0.5,0.3 --steps 2 --epochs 2
    python benchmarks/prune_bench.py latency RUN --keeps 0.837,0.703,0.547 --rounds 5

`accuracy`: `vgg-deploy prune RUN` at each --target-macs, then `export --formats onnx,onnx-int8`; test top-1 of
the dense run, each pruned FP32 model and its INT8 file (the export's own figures, on the test split no decision
saw). `latency`: VGG16 at 224 px with the given keep fractions (the widths `prune` gives at those keeps), each
exported and quantized by `vgg-deploy export` from a run folder with RUN's split (calibration images) but
random weights (latency is a function of the shapes, not the weights), then every INT8 file timed at batch 1
on onnxruntime and OpenVINO, each row in its own process, in alternating rounds. Writes
results/prune_accuracy.json or results/prune_latency.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from vgg_deploy import runfolder
from vgg_deploy.export.pipeline import ExportOptions, export
from vgg_deploy.preprocessing import Preprocessing
from vgg_deploy.prune import PruneConfig, prune
from vgg_deploy.runners.spec import RunnerSpec
from vgg_deploy.timing.isolated import time_rounds
from vgg_deploy.timing.stats import TimingPolicy
from vgg_deploy.widths import DENSE_WIDTHS, multiply_adds, scaled_widths, vgg16_with_widths

RESULTS = Path(__file__).parent / "results"


def _machine() -> dict:
    import onnxruntime
    import openvino
    import torch

    return {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__}


def _int8_figures(run: Path) -> dict:
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    entry = next(a for a in manifest["artifacts"] if a["name"] == "onnx-int8")
    return {"accuracy": entry["accuracy"], "kept_out_of_int8": entry.get("kept_out_of_int8")}


def accuracy(args) -> dict:
    source = runfolder.open_run(args.run)
    rows = [{"target_macs": 1.0, "test_top1_fp32": source.info["metrics"]["test"]["top1"],
             "val_top1": source.info["metrics"]["val"]["top1"]}]
    work = Path(args.work)
    for target in [float(t) for t in args.targets.split(",") if t]:
        out = work / f"pruned-{target}"
        shutil.rmtree(out, ignore_errors=True)
        started = time.perf_counter()
        info = prune(PruneConfig(run=args.run, out=str(out), target_macs=target, steps=args.steps, epochs=args.epochs,
                                 criterion=args.criterion, latency_rounds=args.latency_rounds, batch_size=args.batch_size))
        seconds = time.perf_counter() - started
        export(out, ExportOptions(formats=["onnx", "onnx-int8"], check_images=None))
        steps = info["pruning"]["steps_report"]
        final = steps[-1]
        rows.append({"target_macs": target, "criterion": args.criterion, "keep": final["keep"],
                     "macs_fraction": final["macs"] / steps[0]["macs"],
                     "parameters_fraction": final["parameters"] / steps[0]["parameters"],
                     "val_top1": final["val_top1"], "test_top1_fp32": final["test_top1"],
                     "int8": _int8_figures(out), "steps": steps, "prune_seconds": seconds})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "steps"}, default=str))
    result = {"run": args.run, "rows": rows}
    if args.control:
        result["dense_control"] = control(args)
    return result


def control(args) -> dict:
    """The same recovery training at full width: what the extra epochs alone give the dense model (distilling
    from itself, same rates, same number of epochs as all the pruning steps together), so that a pruned model
    is compared with a dense one trained as long."""
    from vgg_deploy.prune.pipeline import Pruning

    out = Path(args.work) / "dense-control"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    config = PruneConfig(run=args.run, out=str(out), target_macs=0.99, steps=1, epochs=args.steps * args.epochs,
                         latency_rounds=0, batch_size=args.batch_size)
    state = Pruning(config, out)
    _, report = state.run_step(1, state.teacher, state.source_widths, 1.0)
    step = out / "steps" / "1"
    export(step, ExportOptions(formats=["onnx", "onnx-int8"], check_images=None))
    row = {"control": "dense, same recovery epochs", "epochs": config.epochs, "val_top1": report["val_top1"],
           "test_top1_fp32": report["test_top1"], "int8": _int8_figures(step)}
    print(json.dumps(row, default=str))
    return row


def _timing_run(widths: dict, out: Path, source: runfolder.Run, image_size: int) -> Path:
    """A run folder with random weights at these widths: enough for `export` to build and quantize it."""
    out.mkdir(parents=True, exist_ok=True)
    model = vgg16_with_widths(len(source.class_names), widths)
    runfolder.save_weights(model, out / runfolder.WEIGHTS)
    shutil.copyfile(source.path / runfolder.SPLIT_JSON, out / runfolder.SPLIT_JSON)
    info = {"arch": "vgg16", "num_classes": len(source.class_names), "class_names": source.class_names,
            "preprocessing": Preprocessing.for_image_size(image_size).to_dict(), "metrics": {}}
    if widths != DENSE_WIDTHS:
        info["widths"] = widths
    runfolder.write_model_json(out, info)
    return out


def latency(args) -> dict:
    source = runfolder.open_run(args.run)
    work = Path(args.work)
    variants = {"dense": DENSE_WIDTHS}
    for keep in [float(k) for k in args.keeps.split(",")]:
        variants[f"keep {keep}"] = scaled_widths(DENSE_WIDTHS, keep, round_to=args.round_to)
    if args.also_round_to:  # the "8 vs 16": the same keep, widths rounded to another multiple
        keep = float(args.keeps.split(",")[len(args.keeps.split(",")) // 2])
        variants[f"keep {keep}, round {args.also_round_to}"] = scaled_widths(DENSE_WIDTHS, keep, round_to=args.also_round_to)
    specs, info = [], {}
    for name, widths in variants.items():
        folder = work / name.replace(" ", "-").replace(",", "")
        if not (folder / "export" / "model.int8.onnx").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            _timing_run(widths, folder, source, args.image_size)
            export(folder, ExportOptions(formats=["onnx", "onnx-int8"], calib_images=32, check_images=32))
            (folder / "export" / "model.onnx").unlink()  # 530 MB dense; only the INT8 file is timed
        int8 = folder / "export" / "model.int8.onnx"
        info[name] = {"widths": widths, "macs": multiply_adds(widths, image_size=args.image_size,
                                                              num_classes=len(source.class_names))}
        for kind in ("onnxruntime", "openvino"):
            specs.append(RunnerSpec(kind=kind, name=f"{name}, INT8", path=str(int8), threads=args.threads))
    pool = np.random.default_rng(0).standard_normal((1, 3, args.image_size, args.image_size)).astype(np.float32)
    timing = TimingPolicy(warmup_iterations=3, warmup_seconds=1.0, min_iterations=10, max_iterations=args.iterations,
                          time_budget_s=5.0)
    with tempfile.TemporaryDirectory() as tmp:
        results = time_rounds(specs, pool, [1], timing, rounds=args.rounds, workdir=Path(tmp),
                              on_round=lambda r, key, _: print(f"round {r + 1}: {key}", flush=True))
    rows = []
    for key, result in results.items():
        per_round = [float(np.median(d)) * 1000 for d in result["1"]]
        rows.append({"row": key, "per_round_p50_ms": per_round, "p50_ms": float(np.median(per_round))})
    reference = next(r["p50_ms"] for r in rows if r["row"] == "dense, INT8 (openvino)")
    for row in rows:
        row["speedup_vs_openvino_dense_int8"] = reference / row["p50_ms"]
        print(f"{row['row']:40s} {row['p50_ms']:8.2f} ms  {row['speedup_vs_openvino_dense_int8']:.2f}x")
    return {"image_size": args.image_size, "variants": info, "rows": rows, "rounds": args.rounds}


def plot(_args) -> None:
    """results/prune_curve.png: test top-1 (digits, 32 px) against 224 px INT8 latency of the same widths."""
    from vgg_deploy.plots import _pyplot

    acc = json.loads((RESULTS / "prune_accuracy.json").read_text())["rows"]
    lat = {r["row"]: r["p50_ms"] for r in json.loads((RESULTS / "prune_latency.json").read_text())["rows"]}
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for runtime, marker in (("openvino", "o-"), ("onnxruntime", "s--")):
        xs, ys, labels = [], [], []
        for row in acc:
            name = "dense" if row["target_macs"] == 1.0 else f"keep {row['keep']}"
            top1 = row["int8"]["accuracy"]["top1"] if "int8" in row else row["test_top1_fp32"]
            xs.append(lat[f"{name}, INT8 ({runtime})"])
            ys.append(top1)
            labels.append("dense (FP32 top-1)" if name == "dense" else f"MACs {row['target_macs']}")
        ax.plot(xs, ys, marker, label=f"INT8 on {runtime}")
        for x, y, label in zip(xs, ys, labels if runtime == "openvino" else []):
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=8)
    ax.set(xlabel="batch-1 latency at 224 px, ms (2-core EPYC)", ylabel="test top-1 (digits, 32 px)",
           title="pruned VGG16: accuracy against latency")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "prune_curve.png", dpi=100)
    print(f"wrote {RESULTS / 'prune_curve.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="part", required=True)
    acc = sub.add_parser("accuracy")
    acc.add_argument("run")
    acc.add_argument("--targets", default="0.7,0.5,0.3")
    acc.add_argument("--steps", type=int, default=2)
    acc.add_argument("--epochs", type=int, default=2)
    acc.add_argument("--criterion", default="taylor")
    acc.add_argument("--batch-size", type=int, default=32)
    acc.add_argument("--latency-rounds", type=int, default=3)
    acc.add_argument("--control", action="store_true", help="also train the dense model as long, unpruned")
    lat = sub.add_parser("latency")
    lat.add_argument("run", help="a run whose split gives the calibration images")
    lat.add_argument("--keeps", default="0.837,0.703,0.547")
    lat.add_argument("--image-size", type=int, default=224)
    lat.add_argument("--round-to", type=int, default=8)
    lat.add_argument("--also-round-to", type=int, default=16, help="0: skip the rounding comparison")
    lat.add_argument("--rounds", type=int, default=5)
    lat.add_argument("--iterations", type=int, default=30)
    lat.add_argument("--threads", type=int, default=2)
    for p in (acc, lat):
        p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "vgg-prune-bench"))
        p.add_argument("--out", default=None)
    sub.add_parser("plot", help="results/prune_curve.png from the two JSON files")
    args = parser.parse_args()
    if args.part == "plot":
        return plot(args)
    result = {"machine": _machine(), **(accuracy(args) if args.part == "accuracy" else latency(args))}
    out = Path(args.out) if args.out else RESULTS / f"prune_{args.part}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
