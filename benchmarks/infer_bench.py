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


def make_runner(runtime: str, run: Path, threads: int):
    from vgg_deploy.runfolder import open_run
    from vgg_deploy.runners import OnnxRuntimeRunner, TorchRunner

    export = run / "export"
    if runtime == "pytorch-fp32":
        import torch

        torch.set_num_threads(threads)
        return TorchRunner(open_run(run).load_model())
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
            out[str(batch)] = measure(lambda: runner.run(prepared), policy)
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES))
    parser.add_argument("--out", default="benchmarks/results/infer_cpu.json")
    parser.add_argument("--worker", dest="runtime")
    args = parser.parse_args()
    if args.runtime:
        worker(args)
        return

    samples: dict[str, dict[str, list[float]]] = {r: {str(b): [] for b in args.batches} for r in args.runtimes}
    for round_index in range(args.rounds):
        for runtime in args.runtimes:
            cmd = [sys.executable, __file__, args.run, "--worker", runtime, "--iters", str(args.iters),
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
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    for runtime, per in medians.items():
        print(f"{runtime:18s} " + "  ".join(f"b{b}: {ms:7.1f} ms ({ratios.get(runtime, {}).get(b, float('nan')):.2f}x)"
                                            for b, ms in per.items()))


if __name__ == "__main__":
    main()
