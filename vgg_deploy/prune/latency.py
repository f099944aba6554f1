"""Batch-1 latency of candidate models on onnxruntime (FP32, CPU), each timed in its own process in
alternating rounds beside the reference (the run being pruned), as `vgg-deploy benchmark` times rows. It is
what `--target-speedup` aims at and what each step reports; the INT8 artifacts are measured by `benchmark`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from torch import nn

from vgg_deploy.errors import VggDeployError
from vgg_deploy.preprocessing import Preprocessing
from vgg_deploy.runners.spec import RunnerSpec
from vgg_deploy.timing.isolated import time_rounds
from vgg_deploy.timing.stats import TimingPolicy

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


class SideBySide:
    """A candidate's batch-1 latency against the source's, each ONNX file timed in its own processes in
    alternating rounds. The source is exported once (on first use) and reused by every candidate."""

    def __init__(self, source: nn.Module, source_onnx: Path, *, preprocessing: Preprocessing, class_names: list[str],
                 rounds: int):
        self.source, self.source_onnx, self.rounds = source, source_onnx, rounds
        self.preprocessing, self.class_names = preprocessing, class_names

    def _export(self, model: nn.Module, path: Path) -> Path:
        return export_for_timing(model, path, preprocessing=self.preprocessing, class_names=self.class_names)

    def against_source(self, model: nn.Module, workdir: Path) -> dict:
        if not self.source_onnx.is_file():
            self._export(self.source, self.source_onnx)
        files = {"source": self.source_onnx, "candidate": self._export(model, workdir / "candidate.onnx")}
        try:
            ms = median_latency_ms(files, image_size=self.preprocessing.image_size, rounds=self.rounds)
        finally:
            files["candidate"].unlink(missing_ok=True)
        return {"ms": round(ms["candidate"], 4), "source_ms": round(ms["source"], 4),
                "speedup": round(ms["source"] / ms["candidate"], 4), "runtime": RUNTIME}
