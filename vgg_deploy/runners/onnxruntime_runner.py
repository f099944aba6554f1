from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vgg_deploy.errors import UnavailableError
from vgg_deploy.runners.base import Runner

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, path: str | Path, *, name: str | None = None, provider: str = "cpu",
                 threads: int | None = None, precision: str = "fp32"):
        super().__init__(name or Path(path).name)
        self.path = Path(path)
        self.provider = provider
        self.threads = threads
        self.precision = precision
        self.session = None

    def _activate(self) -> None:
        import onnxruntime as ort

        wanted = PROVIDERS[self.provider]
        if wanted[0] not in ort.get_available_providers():
            raise UnavailableError(
                f"onnxruntime here has no {wanted[0]} (available: {', '.join(ort.get_available_providers())}); "
                "install onnxruntime-gpu for CUDA/TensorRT providers"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=wanted)
        used = self.session.get_providers()[0]
        if used != wanted[0]:
            raise UnavailableError(f"onnxruntime fell back to {used} instead of {wanted[0]} for {self.path.name}")
        self.input_name = self.session.get_inputs()[0].name

    def _deactivate(self) -> None:
        self.session = None

    def run(self, prepared: np.ndarray) -> Any:
        return self.session.run(None, {self.input_name: prepared})[0]

    def describe(self) -> dict:
        return {**super().describe(), "provider": self.provider, "threads": self.threads}
