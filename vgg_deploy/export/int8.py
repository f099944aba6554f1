"""INT8 Q/DQ ONNX, calibrated on training images; its accuracy budget decides on the val split, and
its accuracy is reported on the test split, which no decision saw.

Calibration itself lives in the VGG-agnostic `calibration` package; this module supplies the
images, the accuracy budget, and the reporting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

import calibration
from vgg_deploy.console import console
from vgg_deploy.errors import ExportError
from vgg_deploy.export.parity import compare
from vgg_deploy.fileio import atomic_path

# Batches the sensitivity search runs through both models (activations are held in memory).
SENSITIVITY_BATCHES = 2


def build_int8(
    fp32_path: Path,
    out: Path,
    *,
    fp32_sha256: str,
    calib_batches: Sequence[np.ndarray],
    input_name: str,
    method: str,
    cache_dir: Path,
    evaluate: Callable[[Path], np.ndarray],
    reference_logits: np.ndarray,
    labels: np.ndarray,
    report: Callable[[Path], dict],
    max_accuracy_drop: float | None,
) -> dict:
    """`fp32_sha256` is the FP32 file's hash (the manifest has it; a 500 MB file is not read twice).
    `evaluate(path)` returns the candidate's logits on the decision images (val) behind
    `reference_logits`/`labels`; `report(path)` gives the figures on the test images, after the decisions."""
    key = calibration.CalibrationKey(fp32_sha256, calibration.hash_batches(calib_batches), method)
    cache = calibration.RangeCache(cache_dir)
    reusable, why = cache.lookup(key)
    if reusable:
        console.print(f"int8: reusing calibration ranges ({why})")
    else:
        images = sum(b.shape[0] for b in calib_batches)
        console.print(f"int8: calibrating ({method}, {images} training images): {why}")
        try:
            ranges = calibration.collect_ranges(fp32_path, calib_batches, input_name=input_name, method=method)
        except (ValueError, RuntimeError) as err:
            raise ExportError(f"int8 calibration failed: {err}") from None
        cache.store(key, ranges)
    trt_table = calibration.write_tensorrt_table(cache.load(), cache_dir / "tensorrt-ep")

    def quantize(exclude: list[str]):
        with atomic_path(out) as tmp:
            calibration.quantize_qdq(fp32_path, tmp, ranges_path=cache.ranges_path, method=method, exclude_nodes=exclude)
        parity = compare(reference_logits, evaluate(out), labels)
        drop = 100.0 * (parity.reference_top1 - parity.top1)
        return parity, drop

    kept_out: list[str] = []
    parity, drop = quantize(kept_out)
    console.print(f"int8: val top-1 {parity.top1:.4f} vs FP32 {parity.reference_top1:.4f} (drop {drop:+.2f} points)")
    sensitivity: list[tuple[str, float]] = []
    if max_accuracy_drop is None and drop > 1.0:
        console.print("int8: warning: more than 1 point lost; --max-accuracy-drop X keeps the most sensitive layers "
                      "in FP32 until the loss is within X points")
    if max_accuracy_drop is not None and drop > max_accuracy_drop:
        sensitivity = calibration.rank_sensitive_nodes(
            fp32_path, out, calib_batches[:SENSITIVITY_BATCHES], input_name=input_name
        )
        console.print("int8: most sensitive layers (SQNR drop, dB): "
                      + ", ".join(f"{name} {db:.1f}" for name, db in sensitivity[:5]))
        for name, _ in sensitivity:
            kept_out.append(name)
            parity, drop = quantize(kept_out)
            console.print(f"int8: keeping {name} in FP32 -> drop {drop:+.2f} points")
            if drop <= max_accuracy_drop:
                break
        else:
            out.unlink(missing_ok=True)
            raise ExportError(
                f"int8 top-1 drop {drop:.2f} points exceeds --max-accuracy-drop {max_accuracy_drop} even with "
                f"{len(kept_out)} layer(s) kept in FP32 ({', '.join(kept_out)}); try --calib-method or more --calib-images"
            )
        console.print(f"int8: kept in FP32 to meet the budget on val: {', '.join(kept_out)}")
    reported = report(out)
    console.print(f"int8: test top-1 {reported['top1']:.4f} vs FP32 {reported['reference_top1']:.4f} "
                  f"(drop {reported['drop_points']:+.2f} points, agreement {reported['top1_agreement']:.4f})")
    return {
        "calibration": {
            "method": method,
            "images": int(sum(b.shape[0] for b in calib_batches)),
            "source": "train split (class-stratified sample)",
            "reused": reusable,
            "reason": why,
            "ranges": str(cache.ranges_path.relative_to(cache_dir.parent)),
            "tensorrt_ep_table": [str(p.relative_to(cache_dir.parent)) for p in trt_table],
            "key": {"model_sha256": key.model_sha256, "data_sha256": key.data_sha256},
        },
        "accuracy": {**reported, "split": "test", "max_accuracy_drop": max_accuracy_drop},
        "decision": {**parity.to_dict(), "split": "val", "drop_points": drop},
        "kept_fp32": kept_out,
        "sensitivity_db": [[name, round(db, 3)] for name, db in sensitivity],
        "qdq": calibration.qdq_properties(out),
    }
