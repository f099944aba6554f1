"""INT8 Q/DQ ONNX: calibrated on training images, its fallback decided on images that are never reported
(val, topped up with training images calibration did not use), its accuracy reported on the test split.

Calibration itself lives in the VGG-agnostic `calibration` package; this module supplies the images,
the decision criterion, VGG's layer names and the report.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
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
EQUALIZED_RANGES = "equalized"  # the equalized model's ranges, one folder per method below it
KEPT_INPUT = {"cpu": "int8-rounded by its producer's integer kernel", "tensorrt": "float"}


def disagreement_points(reference: np.ndarray, logits: np.ndarray) -> float:
    """Top-1 disagreement with FP32, in points. Unlike a difference of accuracies it counts every flip, so it
    bounds the accuracy drop and does not net out on a small set."""
    return 100.0 * (1.0 - compare(reference, logits).top1_agreement)


@dataclass(frozen=True)
class Int8Source:
    """The FP32 file INT8 is made from. `sha256` is its hash (the manifest has it; a 500 MB file is not read
    twice)."""

    path: Path
    sha256: str
    calib_batches: Sequence[np.ndarray]
    input_name: str
    image_shape: tuple[int, int, int]


@dataclass(frozen=True)
class DecisionImages:
    """What every INT8 decision looks at (never test): `evaluate(path)` gives a candidate's logits on the images
    behind `reference_logits` and `labels`, which `described` counts."""

    evaluate: Callable[[Path], np.ndarray]
    reference_logits: np.ndarray
    labels: np.ndarray
    described: dict

    def disagreement(self, logits: np.ndarray) -> float:
        return disagreement_points(self.reference_logits, logits)


@dataclass(frozen=True)
class Int8Request:
    method: str = "minmax"  # or "auto": each method judged on the decision images
    max_accuracy_drop: float | None = None
    max_fp32_layers: int = 4
    placement: str = "cpu"
    # Quantize the range-equalized FP32 model (calibration.equalize; the same function): "auto" builds INT8 both
    # ways and keeps the one that disagrees less with FP32 on the decision images (plain on a tie).
    equalize: str = "auto"


@dataclass(frozen=True)
class CalibratedRanges:
    cache: calibration.RangeCache
    key: calibration.CalibrationKey
    reused: bool
    why: str


class RangeStore:
    """Each method's calibration ranges, from the cache when its key (model, images, method, onnxruntime)
    matches, else collected once and stored."""

    def __init__(self, source: Int8Source, cache_dir: Path):
        """`cache_dir`: one folder per method below it, for this source alone (plain and equalized models
        each have their own: one method's ranges of the two models differ)."""
        self.source, self.cache_dir = source, cache_dir
        self.data_sha256 = calibration.hash_batches(source.calib_batches)
        self.images = int(sum(b.shape[0] for b in source.calib_batches))
        self._done: dict[str, CalibratedRanges] = {}

    def ranges(self, method: str) -> CalibratedRanges:
        if method not in self._done:
            self._done[method] = self._calibrate(method)
        return self._done[method]

    def _calibrate(self, method: str) -> CalibratedRanges:
        key = calibration.CalibrationKey.build(self.source.sha256, self.data_sha256, method)
        cache = calibration.RangeCache(self.cache_dir / method)
        reusable, why = cache.lookup(key)
        if reusable:
            console.print(f"int8: reusing {method} calibration ranges ({why})")
            return CalibratedRanges(cache, key, reusable, why)
        console.print(f"int8: calibrating ({method}, {self.images} training images): {why}")
        try:
            ranges = calibration.collect_ranges(self.source.path, self.source.calib_batches,
                                                input_name=self.source.input_name, method=method)
        except (ValueError, RuntimeError) as err:
            raise ExportError(f"int8 calibration failed: {err}") from None
        cache.store(key, ranges)
        return CalibratedRanges(cache, key, reusable, why)


EQUALIZE_CHOICES = ("auto", "on", "off")


def choose_variant(requested_method: str, stores: dict[str, RangeStore], out: Path, *, decisions: DecisionImages,
                   placement: str) -> tuple[str, str, dict[str, float], np.ndarray | None]:
    """(variant, method, trials, logits): among `stores` ({"plain"|"equalized": its ranges}) and the requested
    method (every one of METHODS for "auto"), the all-INT8 file that disagrees least with FP32 on the decision
    images (never on test); ties go to plain, then to the first in METHODS. With more than one candidate the
    kept one is left at `out` with its decision `logits`, so the fallback search does not build it again; with
    one there are no trials and no logits."""
    methods = METHODS if requested_method == "auto" else (requested_method,)
    candidates = [(variant, method) for variant in stores for method in methods]
    if len(candidates) == 1:
        return (*candidates[0], {}, None)
    trials: dict[str, float] = {}
    best: tuple[float, str, str, np.ndarray] | None = None
    for variant, method in candidates:
        store = stores[variant]
        trial = out.with_name(f".trial-{out.name}")
        try:
            calibration.quantize_qdq(store.source.path, trial, ranges_path=store.ranges(method).cache.ranges_path,
                                     method=method, placement=placement)
            logits = decisions.evaluate(trial)
            points = trials[f"{variant}/{method}"] = round(decisions.disagreement(logits), 4)
            if best is None or points < best[0]:  # strictly: a tie keeps the earlier candidate
                best = (points, variant, method, logits)
                trial.replace(out)
        finally:
            trial.unlink(missing_ok=True)
        console.print(f"int8: {variant} {method}: disagrees with FP32 on {points:.2f}% of the decision images")
    _, variant, method, logits = best
    console.print(f"int8: kept {variant} {method} (the lowest disagreement on the decision images)")
    return variant, method, trials, logits


class _FallbackCandidates:
    """The files the fallback search builds and judges; remembers each one's decision logits by what it kept,
    so the final file (one of them) is not run again for the report's decision figures."""

    def __init__(self, source: Int8Source, ranges: CalibratedRanges, method: str, out: Path, *,
                 decisions: DecisionImages, placement: str, all_int8_logits: np.ndarray | None = None):
        """`all_int8_logits`: the decision logits of the all-INT8 file already at `out` (choose_variant's), if any."""
        self.source, self.ranges, self.method, self.out = source, ranges, method, out
        self.decisions, self.placement = decisions, placement
        self.logits_by_kept: dict[tuple[str, ...], np.ndarray] = {}
        self._built: tuple[str, ...] = ()
        # A file is a function of what it keeps, so logits are looked up by that; the all-INT8 file is not built
        # again while it is still the one at `out`.
        self._all_int8_at_out = all_int8_logits is not None
        if self._all_int8_at_out:
            self.logits_by_kept[()] = all_int8_logits

    def build(self, kept: list[str]) -> Path:
        self._built = tuple(kept)
        if not kept and self._all_int8_at_out:
            return self.out
        self._all_int8_at_out = False
        with atomic_path(self.out) as tmp:
            calibration.quantize_qdq(self.source.path, tmp, ranges_path=self.ranges.cache.ranges_path,
                                     method=self.method, exclude_nodes=kept, placement=self.placement,
                                     float_inputs_for_excluded=KEPT_INPUT[self.placement] == "float")
        return self.out

    def disagreement(self, path: Path) -> float:
        if self._built not in self.logits_by_kept:
            self.logits_by_kept[self._built] = self.decisions.evaluate(path)
        return self.decisions.disagreement(self.logits_by_kept[self._built])

    def rank(self, path: Path) -> list[tuple[str, float]]:
        return calibration.rank_sensitive_nodes(self.source.path, path, self.source.calib_batches[:SENSITIVITY_BATCHES],
                                                input_name=self.source.input_name)


def build_int8(source: Int8Source, out: Path, *, request: Int8Request, decisions: DecisionImages,
               report: Callable[[Path], dict], cache_dir: Path) -> dict:
    """The INT8 file and its manifest figures. `report(path)` gives the figures on the test images; it is
    called once, after every decision."""
    stores, equalization = _range_stores(source, request.equalize, cache_dir=cache_dir)
    variant, method, trials, all_int8_logits = choose_variant(request.method, stores, out, decisions=decisions,
                                                              placement=request.placement)
    store = stores[variant]
    source, ranges = store.source, store.ranges(method)
    equalization = _equalization_outcome(equalization, variant, _trials_by(trials, method, key=0), cache_dir)
    names = vgg_layer_names(source.path)
    macs, weight_elements = node_macs_and_weights(source.path, source.image_shape)
    cost_model = FloatCostModel()
    cost = float_cost_ms(macs, weight_elements, cost_model)
    console.print(f"int8: Q/DQ placed for {request.placement}: {PLACEMENTS[request.placement]}")
    candidates = _FallbackCandidates(source, ranges, method, out, decisions=decisions, placement=request.placement,
                                     all_int8_logits=all_int8_logits)
    budget = float("inf") if request.max_accuracy_drop is None else request.max_accuracy_drop
    result = search_fallback(build=candidates.build, disagreement=candidates.disagreement, rank=candidates.rank,
                             cost=cost, budget=budget, max_kept=request.max_fp32_layers)

    def label(node: str) -> str:
        return f"{names.get(node, node)} ({node})"

    for step in result.steps:
        console.print(f"int8: keeping {label(step['kept'])} out of INT8 -> disagreement "
                      f"{step['disagreement_before']:.2f} -> {step['disagreement_after']:.2f} points ({step['why']})")
    if not result.met:
        out.unlink(missing_ok=True)
        raise ExportError(
            f"int8 disagrees with FP32 on {result.disagreement:.2f}% of the decision images, beyond "
            f"--max-accuracy-drop {request.max_accuracy_drop}, even with {len(result.kept)} layer(s) kept out of "
            f"INT8 ({', '.join(map(label, result.kept)) or 'none'}); try --calib-method or more --calib-images")
    if request.max_accuracy_drop is None and result.disagreement > 1.0:
        console.print(f"int8: warning: disagrees with FP32 on {result.disagreement:.2f}% of the decision images; "
                      "--max-accuracy-drop X keeps the layers that buy the most agreement per cost out of INT8")
    decision = compare(decisions.reference_logits, candidates.logits_by_kept[tuple(result.kept)], decisions.labels)
    layers = _layer_report(source, out, names, macs, cost, kept=result.kept, placement=request.placement)
    reported = report(out)
    console.print(f"int8: test top-1 {reported['top1']:.4f} vs FP32 {reported['reference_top1']:.4f} "
                  f"(drop {reported['drop_points']:+.2f} points, agreement {reported['top1_agreement']:.4f}, "
                  f"{reported['images']} test images)")
    kept_precision, kept_why = KEPT_PRECISION[request.placement]
    kept_out = [{"node": step["kept"], "layer": names.get(step["kept"], step["kept"]), "precision": kept_precision,
                 "precision_why": kept_why, "input": KEPT_INPUT[request.placement], "why": step["why"],
                 "macs": int(macs[step["kept"]]), "float_cost_ms": round(cost[step["kept"]], 4),
                 "disagreement_before": step["disagreement_before"], "disagreement_after": step["disagreement_after"]}
                for step in result.steps]
    return {
        "placement": {"target": request.placement, "qdq": PLACEMENTS[request.placement]},
        "equalization": equalization,
        "calibration": _calibration_report(store, ranges, method,
                                           _trials_by(trials, variant, key=1) if request.method == "auto" else {},
                                           cache_dir),
        "accuracy": {**reported, "split": "test", "max_accuracy_drop": request.max_accuracy_drop},
        "decision": {**decision.to_dict(), **decisions.described, "criterion": "top-1 disagreement with FP32 (points)",
                     "disagreement_points": result.disagreement, "min_images": DECISION_MIN_IMAGES},
        "kept_out_of_int8": kept_out,
        "fallback_steps": result.steps,
        "fallback_cost_model": cost_model.to_dict(),
        "layers": layers,
        "qdq": calibration.qdq_properties(out),
    }


def _range_stores(source: Int8Source, equalize: str, *, cache_dir: Path) -> tuple[dict[str, RangeStore], dict]:
    """The FP32 models INT8 may be made from ("plain", and "equalized" unless --equalize off or the rewrite
    was not exact), each with its range store, and what equalization did."""
    if equalize not in EQUALIZE_CHOICES:
        raise ExportError(f"--equalize must be one of {', '.join(EQUALIZE_CHOICES)} (got {equalize!r})")
    stores = {"plain": RangeStore(source, cache_dir)}
    equalized_ranges = cache_dir / EQUALIZED_RANGES
    if equalize == "off":
        return stores, {"asked": "off", "why": "not asked for (--equalize off)"}
    equalized, info = _equalized(source, cache_dir=cache_dir)
    if equalized is None:
        return stores, {"asked": equalize, **info}
    if equalize == "on":
        return {"equalized": RangeStore(equalized, equalized_ranges)}, {"asked": "on", **info}
    return {**stores, "equalized": RangeStore(equalized, equalized_ranges)}, {"asked": "auto", **info}


def _equalization_outcome(info: dict, variant: str, trials: dict[str, float], cache_dir: Path) -> dict:
    applied = variant == "equalized"
    if not applied and "file" in info:
        # Not kept: the equalized FP32 file (530 MB at 224 px) goes; its ranges stay cached, and it is rebuilt
        # exactly by the next export that asks.
        (cache_dir.parent / info.pop("file")).unlink(missing_ok=True)
        info.pop("sha256", None)
    if len(trials) > 1:
        why = (f"--equalize auto: {variant} disagrees less with FP32 on the decision images "
               f"({', '.join(f'{k} {v:.2f}' for k, v in trials.items())} points)")
    else:
        why = info.get("why") or f"--equalize {info['asked']}"
    return {**info, "applied": applied, "why": why, "choice": trials}


def _trials_by(trials: dict[str, float], fixed: str, *, key: int) -> dict[str, float]:
    """The trials that share `fixed` (a method: key 0 gives {variant: points}; a variant: key 1 gives
    {method: points})."""
    out = {}
    for name, points in trials.items():
        parts = name.split("/")
        if parts[1 - key] == fixed:
            out[parts[key]] = points
    return out


def _calibration_report(store: RangeStore, ranges: CalibratedRanges, method: str, trials: dict[str, float],
                        cache_dir: Path) -> dict:
    trt_table = calibration.write_tensorrt_table(ranges.cache.load(), cache_dir / "tensorrt-ep")
    key = ranges.key
    return {
        "method": method,
        "method_choice": ({"by": "lowest disagreement with FP32 on the decision images", **trials}
                          if trials else "as asked"),
        "options": resolve_options(method),
        "images": store.images,
        "source": "train split (class-stratified sample)",
        "reused": ranges.reused,
        "reason": ranges.why,
        "ranges": str(ranges.cache.ranges_path.relative_to(cache_dir.parent)),
        "tensorrt_ep_table": [str(p.relative_to(cache_dir.parent)) for p in trt_table],
        "key": {"model_sha256": key.model_sha256, "data_sha256": key.data_sha256, "onnxruntime": key.onnxruntime},
    }


def _layer_report(source: Int8Source, out: Path, names: dict[str, str], macs: dict[str, int],
                  cost: dict[str, float], *, kept: list[str], placement: str) -> list[dict]:
    """Every quantizable layer: its VGG name, multiply-adds, float cost, precision and SQNR against FP32."""
    sqnr = {layer["node"]: layer for layer in layer_sqnr(source.path, out, source.calib_batches[:SENSITIVITY_BATCHES],
                                                         input_name=source.input_name)}
    kept_precision = KEPT_PRECISION[placement][0]
    layers = [{"node": node, "layer": names.get(node, node), "macs": int(count), "float_cost_ms": round(cost[node], 4),
               "precision": kept_precision if node in kept else "int8",
               **{k: round(float(v), 3) for k, v in sqnr.get(node, {}).items() if k != "node"}}
              for node, count in macs.items()]
    console.print("int8: per-layer SQNR (dB, output vs FP32): " + ", ".join(
        f"{layer['layer']} {layer['sqnr_out_db']:.1f}" for layer in layers if "sqnr_out_db" in layer))
    return layers


def _equalized(source: Int8Source, *, cache_dir: Path) -> tuple[Int8Source | None, dict]:
    """The equalized FP32 model every INT8 step then works from (its ranges are cached under its own key)."""
    from calibration.equalize import NotExactError, equalize

    out = cache_dir / EQUALIZED_ONNX
    cache_dir.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(out) as tmp:
            info = equalize(source.path, tmp, source.calib_batches, input_name=source.input_name)
    except NotExactError as err:
        console.print(f"int8: warning: no range equalization ({err})")
        return None, {"applied": False, "why": str(err)}
    worst = max((pair["range_max_over_median_before"] for pair in info["pairs"]), default=1.0)
    console.print(f"int8: equalized the channel ranges of {len(info['pairs'])} layer pairs on the calibration "
                  f"images (largest max/median channel range {worst:.0f} before); FP32 outputs unchanged "
                  f"({info['fp32_output_drift']:.1e} of their range)")
    # The equalized model is a function of the FP32 file, the calibration images (in the range cache's key
    # already) and the rule, so the cache says which of those changed rather than "the model changed".
    key = f"{source.sha256}+{info['method']}"
    return replace(source, path=out, sha256=key), {"file": str(out.relative_to(cache_dir.parent)),
                                                   "sha256": sha256_file(out), **info}


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
    ranges_path = cache_dir.parent / int8_entry["calibration"]["ranges"]  # the ranges the INT8 file was built with
    with tempfile.TemporaryDirectory(prefix=".tensorrt-qdq-", dir=out.parent) as scratch:
        fp32_qdq = Path(scratch) / "fp32-qdq.onnx"
        calibration.quantize_qdq(fp32_path, fp32_qdq, ranges_path=ranges_path,
                                 method=method, exclude_nodes=kept, placement="tensorrt",
                                 float_inputs_for_excluded=KEPT_INPUT["tensorrt"] == "float")
        info = qdq_float_parts_to_fp16(fp32_qdq, out, keep_fp32_nodes=keep_fp32_nodes)
    return out, {**info, "kept_out_of_int8": kept}
