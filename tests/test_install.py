"""What `pip install` resolves to: one onnxruntime per machine, the CPU or the GPU package, never both (they
install into the same folder, and with both the CUDA provider can go missing: onnxruntime issue #26996)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _names(requirements: list[str]) -> set[str]:
    import re

    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].strip().lower() for r in requirements}


def test_the_core_install_holds_no_onnxruntime_and_each_extra_exactly_one():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert not {n for n in _names(project["dependencies"]) if n.startswith("onnxruntime")}
    extras = project["optional-dependencies"]
    assert {n for n in _names(extras["cpu"]) if n.startswith("onnxruntime")} == {"onnxruntime"}
    assert {n for n in _names(extras["gpu"]) if n.startswith("onnxruntime")} == {"onnxruntime-gpu"}
    assert "tensorrt" not in _names(extras["gpu"])  # its libraries need NVIDIA's index: an extra of its own


def test_the_gpu_extra_resolves_to_the_gpu_onnxruntime_alone(tmp_path):
    report = tmp_path / "report.json"
    subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
                    "--report", str(report), "-e", f"{ROOT}[gpu]"], check=True, capture_output=True, timeout=600)
    installed = {item["metadata"]["name"].lower() for item in json.loads(report.read_text())["install"]}
    assert {n for n in installed if n.startswith("onnxruntime")} == {"onnxruntime-gpu"}
