"""VGG16 inference at 224 px on this machine's CPU: PyTorch eager FP32, onnxruntime FP32, the toolkit's
INT8 artifact on onnxruntime, and OpenVINO on the same INT8 file.

Each runtime runs in its own process (an idle thread pool that spins steals the cores from whatever runs
next in the same process), in alternating rounds A B C D A B C D ..., and we quote medians and ratios:
these machines are noisy.

    python benchmarks/infer_bench.py RUN [--rounds 5] [--iters 20] [--threads 2] [--out benchmarks/results/infer_cpu.json]

RUN is an exported run (`vgg-deploy export RUN --formats onnx,onnx-int8`) at 224 px.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RUNTIMES = ("pytorch-fp32", "onnxruntime-fp32", "onnxruntime-int8", "openvino-int8")
# Added when this machine has a CUDA GPU (TensorRT ones when the run has engines and TensorRT is installed).
GPU_RUNTIMES = ("pytorch-cuda-fp32", "pytorch-cuda-fp16", "tensorrt-fp16", "tensorrt-int8")


def default_runtimes(run: Path) -> list[str]:
    import importlib.util

    import torch

    runtimes = list(RUNTIMES)
    if torch.cuda.is_available():
        runtimes += ["pytorch-cuda-fp32", "pytorch-cuda-fp16"]
        if importlib.util.find_spec("tensorrt") is not None:
            runtimes += [r for r in ("tensorrt-fp16", "tensorrt-int8")
                         if (run / "export" / f"model.{r.split('-')[1]}.engine").is_file()]
    return runtimes


def make_runner(runtime: str, run: Path, threads: int):
    from vgg_deploy.runfolder import open_run
    from vgg_deploy.runners import OnnxRuntimeRunner, TorchRunner

    export = run / "export"
    if ":" in runtime:  # "<runtime>:<path>": the same runtime on another INT8 file (a variant)
        runtime, path = runtime.split(":", 1)
        if runtime == "onnxruntime-int8":
            return OnnxRuntimeRunner(path, threads=threads, precision="int8")
        from vgg_deploy.runners.openvino_runner import OpenVINORunner

        return OpenVINORunner(path, threads=threads, precision="int8")
    if runtime == "pytorch-fp32":
        import torch

        torch.set_num_threads(threads)
        return TorchRunner(open_run(run).load_model())
    if runtime.startswith("pytorch-cuda"):
        return TorchRunner(open_run(run).load_model(), device="cuda", precision=runtime.rsplit("-", 1)[1],
                           channels_last=runtime.endswith("fp16"))
    if runtime.startswith("tensorrt-"):
        from vgg_deploy.runners.tensorrt_runner import TensorRTRunner

        precision = runtime.split("-")[1]
        return TensorRTRunner(export / f"model.{precision}.engine", precision=precision)
    if runtime == "onnxruntime-fp32":
        return OnnxRuntimeRunner(export / "model.onnx", threads=threads)
    if runtime == "onnxruntime-int8":
        return OnnxRuntimeRunner(export / "model.int8.onnx", threads=threads, precision="int8")
    if runtime == "openvino-int8":
        from vgg_deploy.runners.openvino_runner import OpenVINORunner

        return OpenVINORunner(export / "model.int8.onnx", threads=threads, precision="int8")
    raise ValueError(runtime)


def worker(args) -> None:
    """One runtime, one process: warm up well, then time each batch size; print JSON."""
    from vgg_deploy.benchmark.stats import TimingPolicy, measure

    runner = make_runner(args.runtime, Path(args.run), args.threads)
    rng = np.random.default_rng(0)
    out = {}
    with runner:
        for batch in args.batches:
            prepared = runner.prepare(rng.standard_normal((batch, 3, 224, 224)).astype(np.float32))
            policy = TimingPolicy(warmup_iterations=5, warmup_seconds=3.0, min_iterations=args.iters,
                                  max_iterations=args.iters, time_budget_s=0.0)
            def step():
                runner.run(prepared)
                runner.synchronize()

            out[str(batch)] = measure(step, policy)
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--runtimes", nargs="+", default=None, help=f"default: {' '.join(RUNTIMES)} (+ GPU ones)")
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME=PATH: also time this INT8 file on onnxruntime and OpenVINO")
    parser.add_argument("--out", default="benchmarks/results/infer_cpu.json")
    parser.add_argument("--worker", dest="runtime")
    args = parser.parse_args()
    if args.runtime:
        worker(args)
        return

    variants = dict(v.split("=", 1) for v in args.variant)
    workers = {r: r for r in (args.runtimes or default_runtimes(Path(args.run)))}
    for name, path in variants.items():
        workers[f"onnxruntime-int8 ({name})"] = f"onnxruntime-int8:{path}"
        workers[f"openvino-int8 ({name})"] = f"openvino-int8:{path}"
    samples: dict[str, dict[str, list[float]]] = {r: {str(b): [] for b in args.batches} for r in workers}
    for round_index in range(args.rounds):
        for runtime, worker_arg in workers.items():
            cmd = [sys.executable, __file__, args.run, "--worker", worker_arg, "--iters", str(args.iters),
                   "--threads", str(args.threads), "--batches", *map(str, args.batches)]
            result = subprocess.run(cmd, capture_output=True, text=True, check=True)
            timings = json.loads(result.stdout.strip().splitlines()[-1])
            for batch, durations in timings.items():
                samples[runtime][batch].append(statistics.median(durations) * 1000)
            print(f"round {round_index + 1}: {runtime}: " + ", ".join(
                f"b{b} {samples[runtime][b][-1]:.1f} ms" for b in samples[runtime]), flush=True)

    from vgg_deploy.benchmark.machine import describe_machine

    medians = {r: {b: statistics.median(v) for b, v in per.items()} for r, per in samples.items()}
    base = medians.get("pytorch-fp32")
    ratios = {r: {b: base[b] / m[b] for b in m} for r, m in medians.items()} if base else {}
    accuracy = {}
    manifest = Path(args.run) / "export" / "manifest.json"
    if manifest.is_file():
        for entry in json.loads(manifest.read_text())["artifacts"]:
            if entry["name"] == "onnx-int8":
                accuracy = {k: entry["accuracy"][k] for k in ("top1", "reference_top1", "drop_points", "images")}
    record = {
        "what": "VGG16 224 px inference, median of per-round medians (ms)",
        "machine": describe_machine(),
        "settings": {"rounds": args.rounds, "iters_per_round": args.iters, "threads": args.threads,
                     "batches": args.batches, "process_per_runtime": True, "order": "alternating rounds"},
        "median_ms": medians,
        "speedup_vs_pytorch_fp32": ratios,
        "per_round_ms": samples,
        "int8_accuracy_on_val": accuracy,
        "variants": variants,
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    for runtime, per in medians.items():
        print(f"{runtime:18s} " + "  ".join(f"b{b}: {ms:7.1f} ms ({ratios.get(runtime, {}).get(b, float('nan')):.2f}x)"
                                            for b, ms in per.items()))


if __name__ == "__main__":
    main()
