"""OpenVINO on the same ONNX files (it reads Q/DQ graphs and runs them as INT8), as an outside reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vgg_deploy.runners.base import Runner


# OpenVINO's CPU plugin computes float parts in bf16 by default where the CPU has native bf16 (AVX512-BF16,
# AMX): an FP32 file there ran with logits 0.05 off onnxruntime's, against 1e-5 with this hint. The files say
# what precision they are (INT8 parts stay INT8); the runner does not lower it behind the user's back.
FLOAT_PRECISION_HINT = "f32"


class OpenVINORunner(Runner):
    backend = "openvino"

    def __init__(self, path: str | Path, *, name: str | None = None, threads: int | None = None,
                 precision: str = "fp32", device: str = "CPU"):
        super().__init__(name or Path(path).name)
        self.path, self.threads, self.precision, self.device = Path(path), threads, precision, device
        self.compiled = self.request = None

    def _activate(self) -> None:
        import openvino as ov

        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": FLOAT_PRECISION_HINT}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(self.path)), self.device, config)
        self.request = self.compiled.create_infer_request()

    def _deactivate(self) -> None:
        self.request = self.compiled = None

    def run(self, prepared: np.ndarray) -> Any:
        return self.request.infer({0: prepared})[self.compiled.output(0)]

    def to_numpy(self, output: Any) -> np.ndarray:
        return np.array(output, dtype=np.float32, copy=True)

    def describe(self) -> dict:
        described = {**super().describe(), "device": self.device, "threads": self.threads}
        if self.compiled is not None:  # what OpenVINO actually compiled, not what was asked
            described["inference_precision"] = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        return described
