"""INT8 Q/DQ ONNX: calibrated on training images, its fallback decided on images that are never reported
(val, topped up with training images calibration did not use), its accuracy reported on the test split.

Calibration itself lives in the VGG-agnostic `calibration` package; this module supplies the images,
the decision criterion, VGG's layer names and the report.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

import calibration
from calibration.cost import FloatCostModel, float_cost_ms, node_macs_and_weights
from calibration.fallback import search_fallback
from calibration.quantize import PLACEMENTS
from calibration.ranges import METHODS, resolve_options
from calibration.sensitivity import layer_sqnr
from vgg_deploy.console import console
from vgg_deploy.errors import ExportError
from vgg_deploy.export.layer_names import vgg_layer_names
from vgg_deploy.fileio import atomic_path, sha256_file
from vgg_deploy.parity import compare

# Batches the SQNR measurement runs through both models (activations are held in memory).
SENSITIVITY_BATCHES = 2
# Fewer decision images than this and one image moves the criterion by more than half a point.
DECISION_MIN_IMAGES = 200
# Precision a layer kept out of INT8 runs in, per placement, and why. onnxruntime's CPU provider has no
# FP16 Conv/Gemm kernels on x86: an FP16 layer would run as casts around FP32 work. A strongly typed TensorRT
# network runs what the graph says, and its source graph has FP16 float parts (fp16.qdq_float_parts_to_fp16).
KEPT_PRECISION = {"cpu": ("fp32", "onnxruntime/OpenVINO CPU kernels for Conv/Gemm are INT8 or FP32, not FP16"),
                  "tensorrt": ("fp16", "the TensorRT source runs every non-quantized part in FP16, kept layers included "
                               "(FP32 only where FP16 would overflow)")}
# On the CPU a kept layer reads the int8-rounded output its producer's integer kernel writes: freeing that
# input costs the producer its kernel (onnxruntime fuses DQ-Conv-Q only with the output Q): measured at
# 224 px, fc7 kept cost 1.72x the all-INT8 latency with a float input and 1.06x with the rounded one
# (benchmarks/README.md, "INT8"). TensorRT's placement has no Q/DQ on op outputs, so its input is float.
EQUALIZED_ONNX = "equalized.onnx"
KEPT_INPUT = {"cpu": "int8-rounded by its producer's integer kernel", "tensorrt": "float"}


def disagreement_points(reference: np.ndarray, logits: np.ndarray) -> float:
    """Top-1 disagreement with FP32, in points. Unlike a difference of accuracies it counts every flip, so it
    bounds the accuracy drop and does not net out on a small set."""
    return 100.0 * (1.0 - compare(reference, logits).top1_agreement)


def build_int8(
    fp32_path: Path,
    out: Path,
    *,
    fp32_sha256: str,
    calib_batches: Sequence[np.ndarray],
    input_name: str,
    image_shape: tuple[int, int, int],
    method: str,
    cache_dir: Path,
    evaluate: Callable[[Path], np.ndarray],
    reference_logits: np.ndarray,
    labels: np.ndarray,
    decision_images: dict,
    report: Callable[[Path], dict],
    max_accuracy_drop: float | None,
    max_fp32_layers: int = 4,
    placement: str = "cpu",
    equalize: bool = False,
) -> dict:
    """`fp32_sha256` is the FP32 file's hash (the manifest has it; a 500 MB file is not read twice).
    `evaluate(path)` returns the candidate's logits on the decision images behind `reference_logits`/`labels`
    (described by `decision_images`); `report(path)` gives the figures on the test images, after the decisions.
    `equalize`: quantize the range-equalized FP32 model (calibration.equalize; the same function, exactly)."""
    calib_count = int(sum(b.shape[0] for b in calib_batches))
    data_sha256 = calibration.hash_batches(calib_batches)
    equalization = {"applied": False, "why": "not asked for (--equalize)"}
    if equalize:
        fp32_path, fp32_sha256, equalization = _equalized(fp32_path, fp32_sha256, calib_batches, input_name=input_name,
                                                          cache_dir=cache_dir)

    calibrated: dict[str, tuple] = {}

    def ranges_for(candidate: str) -> tuple[calibration.RangeCache, calibration.CalibrationKey, bool, str]:
        if candidate not in calibrated:
            calibrated[candidate] = _ranges(candidate)
        return calibrated[candidate]

    def _ranges(candidate: str) -> tuple[calibration.RangeCache, calibration.CalibrationKey, bool, str]:
        key = calibration.CalibrationKey.build(fp32_sha256, data_sha256, candidate)
        cache = calibration.RangeCache(cache_dir / candidate)
        reusable, why = cache.lookup(key)
        if reusable:
            console.print(f"int8: reusing {candidate} calibration ranges ({why})")
            return cache, key, reusable, why
        console.print(f"int8: calibrating ({candidate}, {calib_count} training images): {why}")
        try:
            ranges = calibration.collect_ranges(fp32_path, calib_batches, input_name=input_name, method=candidate)
        except (ValueError, RuntimeError) as err:
            raise ExportError(f"int8 calibration failed: {err}") from None
        cache.store(key, ranges)
        return cache, key, reusable, why

    method_trials: dict[str, float] = {}
    if method == "auto":
        # Each method's all-INT8 file, judged on the decision images; never on test.
        for candidate in METHODS:
            cache, *_ = ranges_for(candidate)
            with atomic_path(out) as tmp:
                calibration.quantize_qdq(fp32_path, tmp, ranges_path=cache.ranges_path, method=candidate,
                                         placement=placement)
            method_trials[candidate] = disagreement_points(reference_logits, evaluate(out))
            console.print(f"int8: {candidate}: disagrees with FP32 on {method_trials[candidate]:.2f}% of the "
                          "decision images")
        method = min(method_trials, key=lambda m: (method_trials[m], list(METHODS).index(m)))
        console.print(f"int8: auto picked {method}")
    cache, key, reusable, why = ranges_for(method)
    options = resolve_options(method)
    trt_table = calibration.write_tensorrt_table(cache.load(), cache_dir / "tensorrt-ep")
    names = vgg_layer_names(fp32_path)
    macs, weight_elements = node_macs_and_weights(fp32_path, image_shape)
    cost_model = FloatCostModel()
    cost = float_cost_ms(macs, weight_elements, cost_model)
    console.print(f"int8: Q/DQ placed for {placement}: {PLACEMENTS[placement]}")

    # Logits of every file the search evaluated, by what it kept: the final file is one of them, and is
    # not run again for the report's decision figures.
    logits_by_kept: dict[tuple[str, ...], np.ndarray] = {}
    built: list[tuple[str, ...]] = [()]

    def build(kept: list[str]) -> Path:
        built[0] = tuple(kept)
        with atomic_path(out) as tmp:
            calibration.quantize_qdq(fp32_path, tmp, ranges_path=cache.ranges_path, method=method,
                                     exclude_nodes=kept, placement=placement,
                                     float_inputs_for_excluded=KEPT_INPUT[placement] == "float")
        return out

    def decide(path: Path) -> float:
        logits_by_kept[built[0]] = evaluate(path)
        return disagreement_points(reference_logits, logits_by_kept[built[0]])

    def rank(path: Path) -> list[tuple[str, float]]:
        return calibration.rank_sensitive_nodes(fp32_path, path, calib_batches[:SENSITIVITY_BATCHES],
                                                input_name=input_name)

    budget = float("inf") if max_accuracy_drop is None else max_accuracy_drop
    result = search_fallback(build=build, disagreement=decide, rank=rank, cost=cost, budget=budget,
                             max_kept=max_fp32_layers)

    def label(node: str) -> str:
        return f"{names.get(node, node)} ({node})"

    for step in result.steps:
        console.print(f"int8: keeping {label(step['kept'])} out of INT8 -> disagreement "
                      f"{step['disagreement_before']:.2f} -> {step['disagreement_after']:.2f} points ({step['why']})")
    if not result.met:
        out.unlink(missing_ok=True)
        raise ExportError(
            f"int8 disagrees with FP32 on {result.disagreement:.2f}% of the decision images, beyond "
            f"--max-accuracy-drop {max_accuracy_drop}, even with {len(result.kept)} layer(s) kept out of INT8 "
            f"({', '.join(map(label, result.kept)) or 'none'}); try --calib-method or more --calib-images")
    decision = compare(reference_logits, logits_by_kept[tuple(result.kept)], labels)
    if max_accuracy_drop is None and result.disagreement > 1.0:
        console.print(f"int8: warning: disagrees with FP32 on {result.disagreement:.2f}% of the decision images; "
                      "--max-accuracy-drop X keeps the layers that buy the most agreement per cost out of INT8")

    sqnr = {layer["node"]: layer for layer in layer_sqnr(fp32_path, out, calib_batches[:SENSITIVITY_BATCHES],
                                                         input_name=input_name)}
    kept_precision, kept_why = KEPT_PRECISION[placement]
    layers = [{"node": node, "layer": names.get(node, node), "macs": int(count), "float_cost_ms": round(cost[node], 4),
               "precision": kept_precision if node in result.kept else "int8",
               **{k: round(float(v), 3) for k, v in sqnr.get(node, {}).items() if k != "node"}}
              for node, count in macs.items()]
    console.print("int8: per-layer SQNR (dB, output vs FP32): " + ", ".join(
        f"{layer['layer']} {layer['sqnr_out_db']:.1f}" for layer in layers if "sqnr_out_db" in layer))
    reported = report(out)
    console.print(f"int8: test top-1 {reported['top1']:.4f} vs FP32 {reported['reference_top1']:.4f} "
                  f"(drop {reported['drop_points']:+.2f} points, agreement {reported['top1_agreement']:.4f}, "
                  f"{reported['images']} test images)")
    kept_out = [{"node": step["kept"], "layer": names.get(step["kept"], step["kept"]), "precision": kept_precision,
                 "precision_why": kept_why, "input": KEPT_INPUT[placement], "why": step["why"],
                 "macs": int(macs[step["kept"]]), "float_cost_ms": round(cost[step["kept"]], 4),
                 "disagreement_before": step["disagreement_before"], "disagreement_after": step["disagreement_after"]}
                for step in result.steps]
    return {
        "placement": {"target": placement, "qdq": PLACEMENTS[placement]},
        "equalization": equalization,
        "calibration": {
            "method": method,
            "method_choice": ({"by": "lowest disagreement with FP32 on the decision images", **method_trials}
                              if method_trials else "as asked"),
            "options": options,
            "images": calib_count,
            "source": "train split (class-stratified sample)",
            "reused": reusable,
            "reason": why,
            "ranges": str(cache.ranges_path.relative_to(cache_dir.parent)),
            "tensorrt_ep_table": [str(p.relative_to(cache_dir.parent)) for p in trt_table],
            "key": {"model_sha256": key.model_sha256, "data_sha256": key.data_sha256, "onnxruntime": key.onnxruntime},
        },
        "accuracy": {**reported, "split": "test", "max_accuracy_drop": max_accuracy_drop},
        "decision": {**decision.to_dict(), **decision_images, "criterion": "top-1 disagreement with FP32 (points)",
                     "disagreement_points": result.disagreement, "min_images": DECISION_MIN_IMAGES},
        "kept_out_of_int8": kept_out,
        "fallback_steps": result.steps,
        "fallback_cost_model": cost_model.to_dict(),
        "layers": layers,
        "qdq": calibration.qdq_properties(out),
    }


def _equalized(fp32_path: Path, fp32_sha256: str, calib_batches: Sequence[np.ndarray], *, input_name: str,
               cache_dir: Path) -> tuple[Path, str, dict]:
    """The equalized FP32 model every INT8 step then works from (its ranges are cached under its own key)."""
    from calibration.equalize import NotExactError, equalize

    out = cache_dir / EQUALIZED_ONNX
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(out) as tmp:
            info = equalize(fp32_path, tmp, calib_batches, input_name=input_name)
    except NotExactError as err:
        console.print(f"int8: warning: no range equalization ({err})")
        return fp32_path, fp32_sha256, {"applied": False, "why": str(err)}
    worst = max((pair["range_max_over_median_before"] for pair in info["pairs"]), default=1.0)
    console.print(f"int8: equalized the channel ranges of {len(info['pairs'])} layer pairs on the calibration "
                  f"images (largest max/median channel range {worst:.0f} before); FP32 outputs unchanged "
                  f"({info['fp32_output_drift']:.1e} of their range)")
    # The equalized model is a function of the FP32 file, the calibration images (in the range cache's key
    # already) and the rule, so the cache says which of those changed rather than "the model changed".
    key = f"{fp32_sha256}+{info['method']}"
    return out, key, {"applied": True, "file": str(out.relative_to(cache_dir.parent)), "sha256": sha256_file(out),
                      **info}


def write_tensorrt_qdq(fp32_path: Path, out: Path, *, int8_entry: dict, cache_dir: Path,
                       keep_fp32_nodes: Sequence[str] = ()) -> tuple[Path, dict]:
    """The onnx-int8 artifact's ranges and kept layers, with Q/DQ placed where TensorRT wants them (inputs of
    quantized ops only) and every non-quantized part in FP16 (kept layers included) except `keep_fp32_nodes`,
    which FP16 would overflow: the graph a trt-int8 engine is built from. Returns it and what it holds."""
    from vgg_deploy.export.fp16 import qdq_float_parts_to_fp16

    kept = [layer["node"] for layer in int8_entry.get("kept_out_of_int8", [])]
    method = int8_entry["calibration"]["method"]
    if int8_entry.get("equalization", {}).get("applied"):
        fp32_path = cache_dir.parent / int8_entry["equalization"]["file"]  # the ranges are the equalized model's
    with tempfile.TemporaryDirectory(prefix=".tensorrt-qdq-", dir=out.parent) as scratch:
        fp32_qdq = Path(scratch) / "fp32-qdq.onnx"
        calibration.quantize_qdq(fp32_path, fp32_qdq, ranges_path=calibration.RangeCache(cache_dir / method).ranges_path,
                                 method=method, exclude_nodes=kept, placement="tensorrt",
                                 float_inputs_for_excluded=KEPT_INPUT["tensorrt"] == "float")
        info = qdq_float_parts_to_fp16(fp32_qdq, out, keep_fp32_nodes=keep_fp32_nodes)
    return out, {**info, "kept_out_of_int8": kept}
