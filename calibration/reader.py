from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from onnxruntime.quantization import CalibrationDataReader


class BatchReader(CalibrationDataReader):
    """Feeds a list of input batches to onnxruntime's calibrators, under the model's input name.

    Re-iterable (`rewind`), since the sensitivity search runs the same batches through two models.
    """

    def __init__(self, input_name: str, batches: Sequence[np.ndarray]):
        self.input_name = input_name
        self.batches = [np.ascontiguousarray(b, dtype=np.float32) for b in batches]
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.batches):
            return None
        batch = self.batches[self._next]
        self._next += 1
        return {self.input_name: batch}

    def rewind(self) -> None:
        self._next = 0

    def __len__(self) -> int:
        return len(self.batches)
