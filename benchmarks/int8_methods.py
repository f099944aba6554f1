"""INT8 on trained runs: each calibration method without a budget, then the default method with a budget.

For every run: the FP32 ONNX is exported once; each method then builds `onnx-int8` in its own copy of
the run folder (big files hard-linked), and the figures are read back from the manifest: test top-1 and
agreement with FP32 (test: no decision saw it), the disagreement on the decision images, the kept
layers, and the seconds the INT8 step took.

    python benchmarks/int8_methods.py RUN [RUN ...] [--budget 0.5] [--out benchmarks/results/int8_methods.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from vgg_deploy.benchmark.machine import describe_machine
from vgg_deploy.errors import VggDeployError
from vgg_deploy.export.pipeline import ExportOptions, export
from vgg_deploy.fileio import copy_run_sharing_files

METHODS = ("entropy", "minmax", "percentile")


def _copy_run(run: Path, dest: Path) -> Path:
    """The run with its FP32 ONNX, sharing the big files by hard link; no INT8 file, no ranges."""
    if dest.exists():
        shutil.rmtree(dest)
    return copy_run_sharing_files(run, dest, ignore=shutil.ignore_patterns(
        "model.int8.onnx", "calibration", "model.fp16.onnx", "benchmark"))


def _int8_figures(run: Path, options: ExportOptions) -> dict:
    start = time.perf_counter()
    try:
        manifest = export(run, options)
    except VggDeployError as err:  # a budget that cannot be met is a result too
        return {"failed": str(err), "int8_seconds": round(time.perf_counter() - start, 1)}
    seconds = time.perf_counter() - start
    entry = next(a for a in manifest["artifacts"] if a["name"] == "onnx-int8")
    accuracy, decision = entry["accuracy"], entry["decision"]
    return {
        "test_images": accuracy["images"],
        "fp32_top1": accuracy["reference_top1"],
        "int8_top1": accuracy["top1"],
        "drop_points": accuracy["drop_points"],
        "agreement": accuracy["top1_agreement"],
        "decision_images": decision["images"],
        "decision_disagreement_points": decision["disagreement_points"],
        "kept_out_of_int8": [k["layer"] for k in entry["kept_out_of_int8"]],
        "fallback_trials": sum(len(step["trials"]) for step in entry["fallback_steps"]),
        "int8_seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--default-method", default="minmax")
    parser.add_argument("--calib-images", type=int, default=128)
    parser.add_argument("--work", type=Path, default=Path("/tmp/vgg-int8-methods"))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/int8_methods.json"))
    args = parser.parse_args()

    results = {}
    for run in args.runs:
        base = args.work / run.name / "base"
        _copy_run(run, base)
        export(base, ExportOptions(formats=["onnx"], check_images=None))
        figures = {}
        for method in METHODS:
            copy = _copy_run(base, args.work / run.name / method)
            figures[method] = _int8_figures(copy, ExportOptions(formats=["onnx-int8"], calib_method=method,
                                                                calib_images=args.calib_images, check_images=None))
            print(run.name, method, figures[method], flush=True)
        copy = _copy_run(base, args.work / run.name / "budget")
        figures[f"{args.default_method} --max-accuracy-drop {args.budget}"] = _int8_figures(
            copy, ExportOptions(formats=["onnx-int8"], calib_method=args.default_method, check_images=None,
                                calib_images=args.calib_images, max_accuracy_drop=args.budget))
        results[str(run)] = figures
        shutil.rmtree(args.work / run.name)
    record = {"what": "INT8 (onnxruntime CPU Q/DQ) against FP32 on trained runs; accuracy on each run's test split",
              "machine": describe_machine(), "date": time.strftime("%Y-%m-%d"),
              "calib_images": args.calib_images, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
