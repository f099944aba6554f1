"""onnxruntime on CPU, CUDA or TensorRT. On a GPU provider the input is copied to the device in `prepare`
and bound with IO binding (the output stays on the device until `to_numpy`), so a timed `run` is the
model alone, not two host<->device copies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vgg_deploy.errors import UnavailableError
from vgg_deploy.runners.base import Runner
from vgg_deploy.runners.providers import provider_problem

PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def provider_entries(provider: str, *, cache_dir: str | Path | None = None) -> list:
    """onnxruntime's providers list. TensorRT's gets its engine and timing caches in `cache_dir` (option names
    as in onnxruntime's tensorrt_execution_provider_info.cc), so the engine it builds in the first session is
    reused by every later one, in this process or another, instead of being rebuilt inside a timed run's warm-up."""
    names = PROVIDERS[provider]
    if provider != "tensorrt" or cache_dir is None:
        return list(names)
    cache = str(cache_dir)
    options = {"trt_engine_cache_enable": "True", "trt_engine_cache_path": cache,
               "trt_timing_cache_enable": "True", "trt_timing_cache_path": cache}
    return [(names[0], options), *names[1:]]


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, path: str | Path, *, name: str | None = None, provider: str = "cpu",
                 threads: int | None = None, precision: str = "fp32", io_binding: bool | None = None,
                 cache_dir: str | Path | None = None):
        super().__init__(name or Path(path).name)
        self.path = Path(path)
        self.provider = provider
        self.cache_dir = cache_dir
        self.threads = threads
        self.precision = precision
        # On by default where it saves copies (GPU providers); it also works on the CPU, where tests check it.
        self.io_binding = provider != "cpu" if io_binding is None else io_binding
        self.device = "cpu" if provider == "cpu" else "cuda"
        self.session = None

    def _activate(self) -> None:
        import onnxruntime as ort

        wanted = PROVIDERS[self.provider]
        problem = provider_problem(wanted[0])
        if problem is not None:
            raise UnavailableError(problem)
        if self.cache_dir is not None:
            Path(self.cache_dir).mkdir(parents=True, exist_ok=True)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path), sess_options=options,
                                            providers=provider_entries(self.provider, cache_dir=self.cache_dir))
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
                "io_binding": self.io_binding, **({"cache_dir": str(self.cache_dir)} if self.cache_dir else {})}
