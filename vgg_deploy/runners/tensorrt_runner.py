"""TensorRT engines with torch CUDA tensors as I/O buffers.

set_tensor_address + execute_async_v3 on torch's current stream: no pycuda (NVIDIA's samples dropped
it in 10.13/10.14, and its context clashes with torch's, NVIDIA/TensorRT#4608).
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


class TensorRTRunner(Runner):
    backend = "tensorrt"

    def __init__(self, engine_path: str | Path, *, name: str | None = None, precision: str = "fp16"):
        super().__init__(name or Path(engine_path).name)
        self.engine_path = Path(engine_path)
        self.precision = precision

    def _activate(self) -> None:
        import tensorrt as trt
        import torch

        from vgg_deploy.export.tensorrt_meta import check_compatible, detect_environment

        check_compatible(self.engine_path, detect_environment())
        self.trt, self.torch = trt, torch
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {self.engine_path}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.output_dtype = torch_dtype(trt, self.engine.get_tensor_dtype(self.output_name))

    def _deactivate(self) -> None:
        self.context = self.engine = self.runtime = None

    def prepare(self, batch: np.ndarray) -> Any:
        return self.torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).cuda()

    def run(self, prepared: Any) -> Any:
        self.context.set_input_shape(self.input_name, tuple(prepared.shape))
        output = self.torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=self.output_dtype,
                                  device=prepared.device)
        self.context.set_tensor_address(self.input_name, prepared.data_ptr())
        self.context.set_tensor_address(self.output_name, output.data_ptr())
        stream = self.torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT execution failed for {self.engine_path.name}")
        return output

    def synchronize(self) -> None:
        self.torch.cuda.synchronize()

    def to_numpy(self, output: Any) -> np.ndarray:
        return output.float().cpu().numpy()
