"""onnxruntime on CPU, CUDA or TensorRT. On a GPU provider the input is copied to the device in `prepare`
and bound with IO binding (the output stays on the device until `to_numpy`), so a timed `run` is the
model alone, not two host<->device copies."""

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
                 threads: int | None = None, precision: str = "fp32", io_binding: bool | None = None):
        super().__init__(name or Path(path).name)
        self.path = Path(path)
        self.provider = provider
        self.threads = threads
        self.precision = precision
        # On by default where it saves copies (GPU providers); it also works on the CPU, where tests check it.
        self.io_binding = provider != "cpu" if io_binding is None else io_binding
        self.device = "cpu" if provider == "cpu" else "cuda"
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
        self.output_name = self.session.get_outputs()[0].name
        self._ort = ort

    def _deactivate(self) -> None:
        self.session = None

    def prepare(self, batch: np.ndarray) -> Any:
        host = super().prepare(batch)
        if not self.io_binding:
            return host
        binding = self.session.io_binding()
        on_device = self._ort.OrtValue.ortvalue_from_numpy(host, self.device, 0)
        binding.bind_ortvalue_input(self.input_name, on_device)
        binding.bind_output(self.output_name, self.device)
        return binding, on_device  # the OrtValue must outlive the binding that points at it

    def run(self, prepared: Any) -> Any:
        if not self.io_binding:
            return self.session.run(None, {self.input_name: prepared})[0]
        binding, _ = prepared
        self.session.run_with_iobinding(binding)
        return binding

    def to_numpy(self, output: Any) -> np.ndarray:
        if self.io_binding:
            output = output.copy_outputs_to_cpu()[0]
        return super().to_numpy(output)

    def describe(self) -> dict:
        return {**super().describe(), "provider": self.provider, "threads": self.threads,
                "io_binding": self.io_binding}
