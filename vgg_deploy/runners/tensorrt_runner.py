"""TensorRT engines with torch CUDA tensors as I/O buffers.

set_tensor_address + execute_async_v3 on a stream of the runner's own: no pycuda (NVIDIA's samples
dropped it in 10.13/10.14, and its context clashes with torch's, NVIDIA/TensorRT#4608). The input shape
is set, and the output allocated, once per batch shape, not on every call, so a timed `run` is the
engine alone; batches are checked against the engine's optimization profile, and `infer` splits a
larger one into pieces that fit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vgg_deploy.runners.base import Runner


def torch_dtype(trt, dtype):
    import torch

    table = {
        trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT8: torch.int8,
        trt.DataType.INT32: torch.int32, trt.DataType.BOOL: torch.bool,
    }
    for name, torch_type in (("BF16", torch.bfloat16), ("INT64", torch.int64)):
        if hasattr(trt.DataType, name):
            table[getattr(trt.DataType, name)] = torch_type
    return table[dtype]


_LOGGER: list = []  # [(the tensorrt module, its logger)]: the module is held, so a stand-in's id is never reused


def tensorrt_logger(trt) -> Any:
    """One logger per process: TensorRT warns when builders and runtimes in one process are given different
    loggers."""
    if not _LOGGER or _LOGGER[0][0] is not trt:
        _LOGGER[:] = [(trt, trt.Logger(trt.Logger.WARNING))]
    return _LOGGER[0][1]


class TensorRTRunner(Runner):
    backend = "tensorrt"

    def __init__(self, engine_path: str | Path, *, name: str | None = None, precision: str = "fp16"):
        super().__init__(name or Path(engine_path).name)
        self.engine_path = Path(engine_path)
        self.precision = precision

    def _activate(self) -> None:
        import tensorrt as trt
        import torch

        from vgg_deploy.artifacts.tensorrt_meta import check_compatible, detect_environment

        check_compatible(self.engine_path, detect_environment())
        self.trt, self.torch = trt, torch
        self.runtime = trt.Runtime(tensorrt_logger(trt))
        engine = self.runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {self.engine_path}")
        self._bind_engine(trt, engine)
        self.context = engine.create_execution_context()
        self.stream = torch.cuda.Stream()
        self.device = "cuda"

    def _bind_engine(self, trt, engine) -> None:
        """Names, dtypes and the batch profile, read from the engine: an engine built with an FP16 input gets
        FP16 input buffers, not FP32 bytes it would misread."""
        from vgg_deploy.artifacts.tensorrt_meta import BatchProfile

        self.engine = engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.input_dtype = torch_dtype(trt, engine.get_tensor_dtype(self.input_name))
        self.output_dtype = torch_dtype(trt, engine.get_tensor_dtype(self.output_name))
        self.profile = BatchProfile.from_engine_shapes(engine.get_tensor_profile_shape(self.input_name, 0))
        self.input_shape: tuple[int, ...] | None = None
        self.outputs: dict[tuple[int, ...], Any] = {}  # one output buffer per input shape, reused

    def _deactivate(self) -> None:
        if getattr(self, "stream", None) is not None:
            # Work queued on the stream may still read the buffers and the context dropped below.
            self.stream.synchronize()
        self.context = self.engine = self.runtime = self.stream = None
        self.outputs = {}

    def prepare(self, batch: np.ndarray) -> Any:
        self.profile.check(batch.shape, self.engine_path.name)
        host = self.torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        on_device = host.to(device=self.device, dtype=self.input_dtype)
        if on_device.is_cuda:
            self.stream.wait_stream(self.torch.cuda.current_stream())  # the copy ran on torch's stream
            on_device.record_stream(self.stream)  # so the allocator does not reuse it while the engine reads it
        return on_device

    def _set_shape(self, shape: tuple[int, ...]) -> Any:
        if shape != self.input_shape:
            if not self.context.set_input_shape(self.input_name, shape):
                self.input_shape = None  # the context's state is unknown now: set it again next time
                raise RuntimeError(f"TensorRT refused input shape {shape} for {self.engine_path.name} "
                                   f"(profile: batch {self.profile.min}-{self.profile.max})")
            self.input_shape = shape
        if shape not in self.outputs:
            with self.torch.cuda.stream(self.stream):
                self.outputs[shape] = self.torch.empty(tuple(self.context.get_tensor_shape(self.output_name)),
                                                       dtype=self.output_dtype, device="cuda")
        return self.outputs[shape]

    def run(self, prepared: Any) -> Any:
        """The output buffer is reused by the next run of the same shape: read it (to_numpy) before then."""
        output = self._set_shape(tuple(prepared.shape))
        self.context.set_tensor_address(self.input_name, prepared.data_ptr())
        self.context.set_tensor_address(self.output_name, output.data_ptr())
        if not self.context.execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"TensorRT execution failed for {self.engine_path.name}")
        return output

    def synchronize(self) -> None:
        self.stream.synchronize()

    def to_numpy(self, output: Any) -> np.ndarray:
        self.stream.synchronize()
        return output.float().cpu().numpy()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if not self.is_active:
            raise RuntimeError(f"runner {self.name} used before activate()")
        pieces = []
        for part in self.profile.chunks(len(batch)):
            piece = batch[part]
            short = self.profile.min - len(piece)
            if short > 0:  # fewer images than the profile's minimum: pad with copies, drop their logits
                piece = np.concatenate([piece, np.repeat(piece[-1:], short, axis=0)])
            pieces.append(Runner.infer(self, piece)[: part.stop - part.start])
        return np.concatenate(pieces)
