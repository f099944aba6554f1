"""Activation ranges: collected by onnxruntime's calibrators, cached under a key, reusable."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime
from onnxruntime.quantization.calibrate import (
    CalibrationMethod,
    TensorsData,
    create_calibrator,
    load_tensors_data,
    save_tensors_data,
)

from calibration.reader import BatchReader

METHODS = {
    "entropy": CalibrationMethod.Entropy,
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
}
# Each method's calibrator settings. Symmetric everywhere: TensorRT takes only zero-point-0 int8 Q/DQ.
# entropy: onnxruntime's defaults (128 bins, 128 quantized bins) leave its KL search a single candidate
# threshold, the maximum, which is min-max under another name. 2048 bins over [-max, max] with 255 quantized
# bins (int8's -127..127) search 898 thresholds from 1/8 of the maximum up, as TensorRT's entropy
# calibrator does (2048 bins over |x|, 128 quantized bins per side).
# percentile: the threshold is where |x|'s histogram reaches the percentile (within one of 2048 bins).
METHOD_OPTIONS: dict[str, dict] = {
    "entropy": {"symmetric": True, "num_bins": 2048, "num_quantized_bins": 255},
    "minmax": {"symmetric": True},
    "percentile": {"symmetric": True, "num_bins": 2048, "percentile": 99.999},
}
# One batch per collect_data call: calibrators hold every intermediate output of a call in memory, and
# stack them, which fails when the last batch is shorter. Ranges and histograms merge across calls.
_CHUNK = 1


def hash_batches(batches: Sequence[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for batch in batches:
        array = np.ascontiguousarray(batch, dtype=np.float32)
        digest.update(str(array.shape).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def resolve_options(method: str, options: dict | None = None) -> dict:
    if method not in METHODS:
        raise ValueError(f"unknown calibration method {method!r}; choose from {', '.join(METHODS)}")
    return dict(METHOD_OPTIONS[method] if options is None else options)


@dataclass(frozen=True)
class CalibrationKey:
    """Everything the ranges depend on. Any difference means recalibrating."""

    model_sha256: str
    data_sha256: str
    method: str
    options: str = ""  # the calibrator's settings, as sorted JSON
    op_types: str = "all"  # which tensors were calibrated
    onnxruntime: str = onnxruntime.__version__

    @classmethod
    def build(cls, model_sha256: str, data_sha256: str, method: str, *, options: dict | None = None,
              op_types: Sequence[str] | None = None) -> CalibrationKey:
        return cls(model_sha256, data_sha256, method, json.dumps(resolve_options(method, options), sort_keys=True),
                   ",".join(sorted(op_types)) if op_types else "all")

    def difference(self, other: CalibrationKey) -> str | None:
        for field, label in (("model_sha256", "the FP32 model"), ("data_sha256", "the calibration images"),
                             ("method", "the calibration method"), ("options", "the calibrator options"),
                             ("op_types", "the calibrated op types"), ("onnxruntime", "the onnxruntime version")):
            mine, theirs = getattr(self, field), getattr(other, field)
            if mine != theirs:
                short = (lambda v: v[:12]) if field.endswith("sha256") else (lambda v: v)
                return f"{label} changed ({short(theirs)} -> {short(mine)})"
        return None


class RangeCache:
    """`ranges.json` (onnxruntime's TensorsData cache format) plus `ranges.key.json` naming what made it."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.folder = Path(folder)
        self.ranges_path = self.folder / "ranges.json"
        self.key_path = self.folder / "ranges.key.json"

    def lookup(self, key: CalibrationKey) -> tuple[bool, str]:
        """(reusable, why)."""
        if not self.ranges_path.is_file() or not self.key_path.is_file():
            return False, "no cached ranges"
        try:
            stored = CalibrationKey(**json.loads(self.key_path.read_text()))
        except (ValueError, TypeError) as err:
            return False, f"cached range key unreadable ({err})"
        diff = key.difference(stored)
        return (False, diff) if diff else (True, "model, images, method, options and onnxruntime match the cached ranges")

    def store(self, key: CalibrationKey, ranges: TensorsData) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        # Key last: a crash between the two leaves ranges without a key, which is never reused.
        self.key_path.unlink(missing_ok=True)
        _atomic(self.ranges_path, lambda p: save_tensors_data(ranges, p))
        _atomic(self.key_path, lambda p: Path(p).write_text(json.dumps(asdict(key), indent=2)))

    def load(self) -> TensorsData:
        return load_tensors_data(self.ranges_path)


def _atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 is not what a plain write would give
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def collect_ranges(
    model_path: str | os.PathLike[str], batches: Sequence[np.ndarray], *, input_name: str, method: str,
    op_types: Sequence[str] | None = None, options: dict | None = None,
) -> TensorsData:
    """Run the FP32 model over the batches with onnxruntime's calibrator for `method` (settings from
    METHOD_OPTIONS unless `options` replaces them; a CalibrationKey built with the same arguments names them)."""
    options = resolve_options(method, options)
    if not batches:
        raise ValueError("no calibration batches")
    with tempfile.TemporaryDirectory(prefix="calibration-") as tmp:
        calibrator = create_calibrator(
            Path(model_path),
            op_types,
            augmented_model_path=str(Path(tmp) / "augmented.onnx"),
            calibrate_method=METHODS[method],
            use_external_data_format=True,
            extra_options=options,
        )
        # onnxruntime's calibrators print progress to stdout; keep the caller's output clean.
        with contextlib.redirect_stdout(io.StringIO()):
            for start in range(0, len(batches), _CHUNK):
                calibrator.collect_data(BatchReader(input_name, batches[start : start + _CHUNK]))
            ranges = calibrator.compute_data()
        del calibrator
    return ranges


def write_tensorrt_table(ranges: TensorsData, folder: str | os.PathLike[str]) -> list[Path]:
    """The calibration table onnxruntime's TensorRT execution provider reads (its own writer)."""
    from onnxruntime.quantization.quant_utils import write_calibration_table

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_calibration_table(dict(ranges.data), dir=str(folder))
    return sorted(p for p in folder.iterdir() if p.name.startswith("calibration"))
