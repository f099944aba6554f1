from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from torch import nn

from vgg_deploy.runners.base import Runner


class TorchRunner(Runner):
    """PyTorch eager. The baseline is FP32, contiguous NCHW: what a user runs without this toolkit."""

    backend = "torch"

    def __init__(self, model: nn.Module, *, name: str = "pytorch", device: str = "cpu", precision: str = "fp32",
                 channels_last: bool = False):
        super().__init__(name)
        self.model = model
        self.device = torch.device(device)
        self.precision = precision
        self.channels_last = channels_last

    def _activate(self) -> None:
        self.model.eval().to(self.device)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def _deactivate(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def prepare(self, batch: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        return tensor.contiguous(memory_format=torch.channels_last) if self.channels_last else tensor

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    @torch.inference_mode()
    def run(self, prepared: torch.Tensor) -> Any:
        with self._autocast():
            return self.model(prepared)

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def to_numpy(self, output: torch.Tensor) -> np.ndarray:
        return output.float().cpu().numpy()

    def describe(self) -> dict:
        return {**super().describe(), "device": self.device.type, "channels_last": self.channels_last}
