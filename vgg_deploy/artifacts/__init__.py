"""What export leaves in a run folder and everything downstream reads: the folder names, the manifest, the
TensorRT engine stamps, and which artifact (on which runtime) to use. It imports no step, so benchmark,
predict, serve and the runners can all depend on it."""

from __future__ import annotations

from pathlib import Path

EXPORT_DIR = "export"
BENCHMARK_DIR = "benchmark"
REPORT_JSON = "report.json"


def export_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / EXPORT_DIR


def benchmark_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / BENCHMARK_DIR
