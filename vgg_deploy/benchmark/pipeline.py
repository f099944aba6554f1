"""The benchmark step: RUN/ + RUN/export/ -> RUN/benchmark/ (report.json, report.md, plots)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from vgg_deploy.batches import EVAL_MEMORY_MB, eval_batches, first_images, run_batches
from vgg_deploy.benchmark.accuracy import accuracy_figures
from vgg_deploy.benchmark.machine import describe_machine, physical_cores
from vgg_deploy.benchmark.report import terminal_table, write_report
from vgg_deploy.console import console
from vgg_deploy.data import scan_image_folder
from vgg_deploy.timing.isolated import time_rounds
from vgg_deploy.timing.stats import TimingPolicy, summarize_rounds
from vgg_deploy.errors import (
    AccuracyGateError,
    ArtifactFailedError,
    DataError,
    UnavailableError,
    VggDeployError,
)
from vgg_deploy.artifacts import BENCHMARK_DIR
from vgg_deploy.artifacts import export_dir as export_dir_of
from vgg_deploy.artifacts.choice import installed_runtimes
from vgg_deploy.artifacts.manifest import read_manifest
from vgg_deploy.fileio import check_writable_dir, sha256_file
from vgg_deploy.runfolder import open_run
from vgg_deploy.runners import Runner
from vgg_deploy.runners.spec import RunnerSpec, build_runner

BASELINE = "pytorch"
# PyTorch as a user who tunes it runs it: channels-last FP32 on the CPU (about 1.4x eager NCHW on this
# project's 2-core machine), FP16 autocast on CUDA. Speed-ups are quoted against both.
BEST_PYTORCH = "pytorch-best"
ONNX_BACKENDS = ("onnxruntime", "openvino")


@dataclass
class BenchmarkOptions:
    batch_sizes: list[int] = field(default_factory=lambda: [1, 8, 32])
    data: str | None = None
    threads: int | None = None
    max_accuracy_drop: float | None = None
    provider: str = "cpu"  # onnxruntime execution provider for ONNX artifacts
    # Runtimes for ONNX artifacts: onnxruntime, and openvino on the same files; by default every one installed
    # (predict and serve then take the fastest measured pair).
    onnx_backends: list[str] = field(default_factory=lambda: list(installed_runtimes(ONNX_BACKENDS)))
    eval_batch_size: int = 16
    eval_memory_mb: float = EVAL_MEMORY_MB  # larger evaluation sets are streamed from disk on every pass
    timing: TimingPolicy = field(default_factory=TimingPolicy)
    # Each row timed in its own process this many times, alternating with the others. 5, not 3: two runs of the
    # command agreed on every speed-up within 2% with 5 rounds, and differed by up to 15% with 3
    # (benchmarks/README.md, "Does vgg-deploy benchmark repeat?").
    rounds: int = 5


ORT_TENSORRT_CACHE = "ort-tensorrt-cache"


def _specs_for(entry: dict, export_dir: Path, options: BenchmarkOptions, threads: int) -> list[RunnerSpec]:
    """One row per backend the artifact runs on; each spec builds the runner for accuracy here and again in
    its timing processes."""
    path = str(export_dir / entry["path"])
    if entry["format"] == "tensorrt":
        return [RunnerSpec("tensorrt", entry["name"], path, precision=entry["precision"], device="cuda")]
    # onnxruntime's TensorRT provider caches its engines in the run folder: built once, reused by every round.
    cache_dir = str(export_dir.parent / BENCHMARK_DIR / ORT_TENSORRT_CACHE) if options.provider == "tensorrt" else None
    return [RunnerSpec(backend, entry["name"], path, precision=entry["precision"], threads=threads,
                       provider=options.provider if backend == "onnxruntime" else "cpu",
                       cache_dir=cache_dir if backend == "onnxruntime" else None)
            for backend in options.onnx_backends]


def _evaluate(runner: Runner | RunnerSpec, batches, labels, baseline_logits, class_names) -> dict:
    """Accuracy, in this process; latency is measured afterwards in processes of its own."""
    if isinstance(runner, RunnerSpec):
        try:
            runner = build_runner(runner)
        except ImportError as err:
            return {"artifact": runner.name, "backend": runner.kind, "precision": runner.precision,
                    "status": "skipped", "reason": f"missing package: {err.name or err}"}
    result = {"artifact": runner.name, **runner.describe(), "status": "ok", "reason": None}
    try:
        with runner:
            result |= runner.describe()  # again once active: what the runtime compiled (OpenVINO's precision)
            logits = run_batches(runner, batches)
            result["accuracy"] = accuracy_figures(logits, labels, baseline_logits if baseline_logits is not None else logits,
                                                  class_names)
            return result | {"_logits": logits}
    except UnavailableError as err:
        return result | {"status": "skipped", "reason": str(err)}
    except ImportError as err:
        return result | {"status": "skipped", "reason": f"missing package: {err.name or err}"}
    except Exception as err:  # noqa: BLE001 - one failing artifact is reported, the others still run
        return result | {"status": "failed", "reason": f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"}


def _time_rows(rows: list[tuple[dict, RunnerSpec]], batches, options: BenchmarkOptions) -> None:
    """Latency for every row whose accuracy ran, each in its own process, in alternating rounds."""
    import tempfile

    timed = [(result, spec) for result, spec in rows if result["status"] == "ok"]
    if not timed:
        return
    pool = first_images(batches, max(options.batch_sizes))
    console.print(f"timing {len(timed)} rows, each in its own process, {options.rounds} alternating round(s)")

    def progress(round_index, key, per_batch):
        medians = ", ".join(f"b{b} {1000 * float(np.median(r[-1])):.2f} ms" for b, r in per_batch.items())
        console.print(f"  round {round_index + 1}: {key}: {medians}")

    with tempfile.TemporaryDirectory(prefix="vgg-benchmark-") as tmp:
        timings = time_rounds([spec for _, spec in timed], pool, options.batch_sizes, options.timing,
                              rounds=options.rounds, workdir=Path(tmp), on_round=progress)
    for result, spec in timed:
        per_batch = timings[f"{spec.name} ({spec.kind})"]
        if isinstance(per_batch, str):
            result.update(status="failed", reason=f"timing process: {per_batch}")
            continue
        result["latency_ms"], result["throughput_ips"], result["latency_samples_ms"] = {}, {}, {}
        for batch, rounds in per_batch.items():
            result["latency_ms"][batch], result["throughput_ips"][batch] = summarize_rounds(rounds, batch_size=int(batch))
            result["latency_samples_ms"][batch] = [round(d * 1000.0, 4) for durations in rounds for d in durations]


def _eval_items(run, data: str | None):
    if data is None:
        split = run.split()
        if not split.test:
            raise DataError(f"{run.path} has no test split (written by an older vgg-deploy); pass --data DIR "
                            "or re-run `vgg-deploy finetune`")
        # test: the images no decision (checkpoint, calibration, fallback) has seen.
        return split.absolute(split.test), f"test split of {run.path}"
    class_names, samples = scan_image_folder(Path(data))
    if class_names != run.class_names:
        raise DataError(f"--data {data} has classes {class_names}; the model was trained on {run.class_names}")
    return samples, str(data)


def _check_options(options: BenchmarkOptions) -> None:
    if any(b < 1 for b in options.batch_sizes):
        raise VggDeployError(f"--batch-sizes must be positive (got {options.batch_sizes})")
    unknown = [b for b in options.onnx_backends if b not in ONNX_BACKENDS]
    if unknown or not options.onnx_backends:
        raise VggDeployError(f"--backends must name some of {', '.join(ONNX_BACKENDS)} (got {options.onnx_backends})")


def benchmark(run_dir: str | Path, options: BenchmarkOptions) -> dict:
    run = open_run(run_dir)
    export_dir = export_dir_of(run.path)
    manifest = read_manifest(export_dir)
    out = check_writable_dir(run.path / BENCHMARK_DIR)
    _check_options(options)
    threads = options.threads or physical_cores()
    items, data_label = _eval_items(run, options.data)
    batches, labels = eval_batches(items, run.preprocessing, batch_size=options.eval_batch_size,
                                   memory_mb=options.eval_memory_mb)
    if not batches:
        raise DataError(f"no images to evaluate in {data_label}")
    console.print(f"evaluating on {len(labels)} images ({data_label}"
                  + (f", streamed from disk: over --eval-memory-mb {options.eval_memory_mb:g}" if batches.streamed else "")
                  + f"); {threads} threads; batch sizes {options.batch_sizes}")

    device = _pytorch_device(options.provider)

    def evaluate(spec: RunnerSpec, reference: np.ndarray | None) -> dict:
        return _evaluate(spec, batches, labels, reference, run.class_names)

    rows, baseline_logits = _pytorch_rows(run.path, device, threads, evaluate)
    missing = []
    for entry in manifest["artifacts"]:
        console.print(f"{entry['name']}: {entry['format']} {entry['precision']}")
        if not (export_dir / entry["path"]).is_file() or sha256_file(export_dir / entry["path"]) != entry["sha256"]:
            missing.append({"artifact": entry["name"], "backend": entry["format"], "precision": entry["precision"],
                            "status": "failed", "bytes": entry["bytes"],
                            "reason": f"{entry['path']} is missing or differs from the manifest's sha256"})
            continue
        for spec in _specs_for(entry, export_dir, options, threads):
            result = evaluate(spec, baseline_logits)
            result.pop("_logits", None)
            rows.append((result | {"bytes": entry["bytes"]}, spec))
    _time_rows(rows, batches, options)
    results = [result for result, _ in rows] + missing
    for skipped in manifest.get("skipped", []):
        results.append({"artifact": skipped["name"], "backend": "tensorrt", "precision": skipped["name"].split("-")[-1],
                        "status": "skipped", "reason": f"not exported: {skipped['reason']}"})
    _add_speedups(results)
    report = {
        "baseline": BASELINE,
        "best_pytorch": BEST_PYTORCH,
        "run": str(run.path.resolve()),
        "machine": describe_machine(),
        "settings": {"batch_sizes": options.batch_sizes, "threads": threads, "provider": options.provider,
                     "onnx_backends": options.onnx_backends, "images": len(labels), "data": data_label,
                     "eval_streamed": batches.streamed, "eval_memory_mb": options.eval_memory_mb,
                     "timing": asdict(options.timing), "rounds": options.rounds, "process_per_row": True,
                     "max_accuracy_drop": options.max_accuracy_drop},
        "roofline": _roofline(results, manifest, export_dir, run.preprocessing.image_size, device, threads),
        "results": results,
    }
    _write(report, out)
    _gate(report, options.max_accuracy_drop)
    return report


def _pytorch_rows(run_path: Path, device: str, threads: int, evaluate) -> tuple[list[tuple[dict, RunnerSpec]], np.ndarray]:
    """The eager FP32 baseline (its logits are every other row's reference) and PyTorch at its best."""
    console.print(f"{BASELINE}: PyTorch eager FP32 on {device}")
    baseline_spec = RunnerSpec("torch", BASELINE, str(run_path), threads=threads, device=device)
    baseline = evaluate(baseline_spec, None)
    if baseline["status"] != "ok":
        raise VggDeployError(f"the PyTorch baseline failed: {baseline['reason']}")
    baseline_logits = baseline.pop("_logits")
    best_precision = "fp16" if device == "cuda" else "fp32"
    console.print(f"{BEST_PYTORCH}: PyTorch channels-last {best_precision.upper()} on {device}")
    best_spec = RunnerSpec("torch", BEST_PYTORCH, str(run_path), precision=best_precision, threads=threads,
                           device=device, channels_last=True)
    best = evaluate(best_spec, baseline_logits)
    best.pop("_logits", None)
    return [(baseline, baseline_spec), (best, best_spec)], baseline_logits


def _write(report: dict, out: Path) -> None:
    from vgg_deploy.plots import plot_benchmark

    write_report(out, report)
    plot_benchmark(report, out)
    console.print(terminal_table(report))
    console.print(f"report: {out / 'report.json'}, {out / 'report.md'}")


def _roofline(results: list[dict], manifest: dict, export_dir: Path, image_size: int, device: str,
              threads: int) -> dict:
    from vgg_deploy.benchmark import roofline

    fp32 = next((e for e in manifest["artifacts"] if e["format"] == "onnx" and e["precision"] == "fp32"), None)
    if fp32 is None or not (export_dir / fp32["path"]).is_file():
        return {"skipped": "no FP32 ONNX artifact to count multiply-adds from"}
    macs = roofline.graph_macs(export_dir / fp32["path"], image_size)
    console.print(f"roofline: {macs / 1e9:.3f} G multiply-adds per image; measuring this machine's GEMM peaks")
    peaks = roofline.measure_peaks(device=device, threads=threads)
    for result in results:
        if result["status"] == "ok":
            on_gpu = result.get("device") == "cuda" or result.get("backend") == "tensorrt" or (
                result.get("provider") not in (None, "cpu"))
            result["roofline"] = roofline.row_figures(result, macs_per_image=macs, peaks=peaks,
                                                      threads=None if on_gpu else threads)
    return {"macs_per_image": macs, "peaks_gmacs": peaks, "explanation": roofline.EXPLANATION}


def _pytorch_device(provider: str) -> str:
    """The PyTorch rows run where the artifacts do: a CUDA comparison against a CPU baseline is no comparison."""
    import torch

    if provider in ("cuda", "tensorrt"):
        if not torch.cuda.is_available():
            raise UnavailableError(f"--provider {provider} needs a CUDA GPU, and torch sees none")
        return "cuda"
    return "cpu"


def _add_speedups(results: list[dict]) -> None:
    """Each row's p50 speed-up against eager PyTorch and against PyTorch at its best, per batch size."""
    references = {r["artifact"]: r.get("latency_ms") for r in results
                  if r["artifact"] in (BASELINE, BEST_PYTORCH) and r["status"] == "ok"}
    for result in results:
        if result["status"] != "ok":
            continue
        result["speedup"] = {
            f"vs_{name.replace('-', '_')}": {batch: round(latency[batch]["p50"] / stats["p50"], 3)
                                             for batch, stats in result["latency_ms"].items() if batch in latency}
            for name, latency in references.items() if latency
        }


def _gate(report: dict, max_drop: float | None) -> None:
    """Exit non-zero when an artifact failed to run, and (with --max-accuracy-drop) when one lost more top-1
    than allowed. A skipped artifact (no TensorRT here, not exported) is reported, not failed."""
    failed = [f"{r['artifact']} on {r.get('backend', '?')} ({r['reason']})"
              for r in report["results"] if r["status"] == "failed"]
    losers = []
    if max_drop is not None:
        base = next(r for r in report["results"] if r["artifact"] == report["baseline"])["accuracy"]["top1"]
        losers = [
            f"{r['artifact']} on {r['backend']} ({100 * (base - r['accuracy']['top1']):.2f} points)"
            for r in report["results"]
            if r["status"] == "ok" and r["artifact"] != report["baseline"] and 100 * (base - r["accuracy"]["top1"]) > max_drop
        ]
    if losers:
        raise AccuracyGateError(f"top-1 below the baseline by more than {max_drop} points: {', '.join(losers)}"
                                + (f"; and failed: {', '.join(failed)}" if failed else ""))
    if failed:
        raise ArtifactFailedError(f"{len(failed)} artifact run(s) failed: {', '.join(failed)}")
