"""Batch-1 latency of candidate models on onnxruntime (FP32, CPU), each timed in its own process in
alternating rounds beside the reference (the run being pruned), as `vgg-deploy benchmark` times rows. It is
what `--target-speedup` aims at and what each step reports; the INT8 artifacts are measured by `benchmark`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from torch import nn

from vgg_deploy.benchmark.isolated import time_rounds
from vgg_deploy.benchmark.stats import TimingPolicy
from vgg_deploy.errors import VggDeployError
from vgg_deploy.preprocessing import Preprocessing
from vgg_deploy.runners.spec import RunnerSpec

TIMING = TimingPolicy(warmup_iterations=3, warmup_seconds=0.5, min_iterations=10, max_iterations=60, time_budget_s=2.0)
RUNTIME = "onnxruntime FP32, CPU, batch 1"


def export_for_timing(model: nn.Module, path: Path, *, preprocessing: Preprocessing, class_names: list[str]) -> Path:
    from vgg_deploy.export.onnx_fp32 import export_fp32

    export_fp32(model, preprocessing=preprocessing, class_names=class_names, out=path)
    return path


def median_latency_ms(files: dict[str, Path], *, image_size: int, rounds: int, threads: int | None = None) -> dict[str, float]:
    """{name: median over rounds of the per-round median batch-1 latency, ms}."""
    specs = [RunnerSpec(kind="onnxruntime", name=name, path=str(path), threads=threads) for name, path in files.items()]
    pool = np.random.default_rng(0).standard_normal((1, 3, image_size, image_size)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="vgg-deploy-latency-") as workdir:
        results = time_rounds(specs, pool, [1], TIMING, rounds=rounds, workdir=Path(workdir))
    out = {}
    for name, result in zip(files, results.values()):  # results keep the specs' order
        if isinstance(result, str):
            raise VggDeployError(f"timing {name} on onnxruntime failed: {result}")
        out[name] = float(np.median([np.median(durations) for durations in result["1"]]) * 1000.0)
    return out
