from __future__ import annotations

import abc
from typing import Any

import numpy as np


class Runner(abc.ABC):
    """A model that takes preprocessed NCHW float32 batches and returns logits.

    `prepare` puts a batch where the backend wants it (device memory, contiguous layout) so timing can
    leave that out; `run` executes without forcing a copy back; `synchronize` waits for the device;
    `to_numpy` brings the result home. `infer` chains them for accuracy work.
    """

    backend: str = "?"
    precision: str = "fp32"

    def __init__(self, name: str):
        self.name = name
        self.is_active = False

    @abc.abstractmethod
    def _activate(self) -> None: ...

    @abc.abstractmethod
    def _deactivate(self) -> None: ...

    @abc.abstractmethod
    def run(self, prepared: Any) -> Any: ...

    def prepare(self, batch: np.ndarray) -> Any:
        return np.ascontiguousarray(batch, dtype=np.float32)

    def synchronize(self) -> None:
        """Block until queued work is done (GPU backends override)."""

    def to_numpy(self, output: Any) -> np.ndarray:
        return np.asarray(output, dtype=np.float32)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        if not self.is_active:
            raise RuntimeError(f"runner {self.name} used before activate()")
        return self.to_numpy(self.run(self.prepare(batch)))

    def activate(self) -> None:
        if not self.is_active:
            self._activate()
            self.is_active = True

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate()
            self.is_active = False

    def describe(self) -> dict:
        return {"backend": self.backend, "precision": self.precision}

    def __enter__(self) -> Runner:
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()
