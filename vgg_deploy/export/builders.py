"""One builder per artifact: each takes the export's context and returns the artifact's manifest entry."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vgg_deploy.artifacts.manifest import PRECISION, artifact_entry
from vgg_deploy.batches import run_batches
from vgg_deploy.console import console
from vgg_deploy.errors import ExportError
from vgg_deploy.export.context import ExportContext
from vgg_deploy.export.onnx_fp32 import INPUT_NAME, OUTPUT_NAME, export_fp32
from vgg_deploy.fileio import sha256_file
from vgg_deploy.parity import compare

TENSORRT_QDQ = "model.int8.tensorrt-qdq.onnx"
CALIBRATION_DIR = "calibration"
# What each artifact is built from.
SOURCE = {"onnx-fp16": "onnx", "onnx-int8": "onnx", "trt-fp16": "onnx-fp16", "trt-int8": "onnx-int8"}


def build_onnx(ctx: ExportContext, name: str) -> dict:
    path = ctx.path(name)
    info = export_fp32(ctx.model, preprocessing=ctx.run.preprocessing, class_names=ctx.run.class_names, out=path)
    figures = _checked_parity(name, "fp32", path, ctx.reference, ctx.ort_logits(path), ctx.test_labels)
    return artifact_entry(ctx.export_dir, name, **info, parity=figures)


def build_onnx_fp16(ctx: ExportContext, name: str) -> dict:
    from vgg_deploy.export.fp16 import convert_fp16

    path = ctx.path(name)
    info = convert_fp16(ctx.path("onnx"), path, batches=ctx.calibration_batches()[:2], input_name=INPUT_NAME)
    if info["kept_fp32_nodes"]:
        console.print(f"onnx-fp16: kept in FP32 to avoid FP16 overflow: {', '.join(info['kept_fp32_nodes'])}")
    figures = _checked_parity(name, "fp16", path, ctx.reference, ctx.ort_logits(path), ctx.test_labels)
    return artifact_entry(ctx.export_dir, name, fp16=info, parity=figures)


def build_onnx_int8(ctx: ExportContext, name: str) -> dict:
    from vgg_deploy.export.int8 import DecisionImages, Int8Request, Int8Source, build_int8

    o = ctx.options
    source = Int8Source(path=ctx.path("onnx"), sha256=ctx.artifacts["onnx"]["sha256"],
                        calib_batches=ctx.calibration_batches(), input_name=INPUT_NAME,
                        image_shape=(3, ctx.image_size, ctx.image_size))
    decisions = DecisionImages(evaluate=ctx.decision_logits, reference_logits=ctx.decision_reference,
                               labels=ctx.decision_labels, described=ctx.decision_images)
    request = Int8Request(method=o.calib_method, max_accuracy_drop=o.max_accuracy_drop,
                          max_fp32_layers=o.max_fp32_layers, equalize=o.equalize)
    info = build_int8(source, ctx.path(name), request=request, decisions=decisions, report=ctx.test_figures,
                      cache_dir=ctx.export_dir / CALIBRATION_DIR)
    return artifact_entry(ctx.export_dir, name, **info)


def build_tensorrt(ctx: ExportContext, name: str) -> dict:
    from vgg_deploy.artifacts.tensorrt_meta import (
        detect_environment,
        make_sidecar,
        sidecar_path,
        timing_cache_name,
        write_sidecar,
    )
    from vgg_deploy.export.tensorrt_build import build_engine

    env, o = detect_environment(), ctx.options
    source_entry = ctx.artifacts[SOURCE[name]]
    source, source_sha256, extra = ctx.path(SOURCE[name]), source_entry["sha256"], {}
    if name == "trt-int8":
        source, extra["tensorrt_source"] = _tensorrt_qdq_source(ctx, source_entry)
        source_sha256 = sha256_file(source)
    engine = ctx.path(name)
    workspace = int(o.workspace_gib * (1 << 30))
    build_engine(source, engine, env=env, input_name=INPUT_NAME, image_size=ctx.image_size, profile=o.profile,
                 workspace_bytes=workspace, timing_cache=ctx.export_dir / timing_cache_name(env))
    sidecar = make_sidecar(env=env, precision=PRECISION[name], profile=o.profile, source_onnx=source.name,
                           source_sha256=source_sha256, input_name=INPUT_NAME, output_name=OUTPUT_NAME,
                           image_size=ctx.image_size, strongly_typed=True, workspace_bytes=workspace)
    write_sidecar(engine, sidecar)  # before the check: the runner refuses an engine without one
    try:
        figures = _engine_parity(ctx, name, engine)
    except ExportError:
        sidecar_path(engine).unlink(missing_ok=True)
        raise
    return artifact_entry(ctx.export_dir, name, engine=sidecar, parity=figures, **extra)


BUILDERS: dict[str, Callable[[ExportContext, str], dict]] = {
    "onnx": build_onnx, "onnx-fp16": build_onnx_fp16, "onnx-int8": build_onnx_int8,
    "trt-fp16": build_tensorrt, "trt-int8": build_tensorrt,
}


def _tensorrt_qdq_source(ctx: ExportContext, int8_entry: dict) -> tuple[Path, dict]:
    """The CPU artifact's Q/DQ sits on op outputs too; TensorRT gets its own placement of the same ranges, with
    FP16 float parts except where FP16 would overflow."""
    from vgg_deploy.export.int8 import write_tensorrt_qdq

    return write_tensorrt_qdq(ctx.path("onnx"), ctx.export_dir / TENSORRT_QDQ, int8_entry=int8_entry,
                              cache_dir=ctx.export_dir / CALIBRATION_DIR,
                              keep_fp32_nodes=_fp16_overflow(ctx)["kept_fp32_nodes"])


def _fp16_overflow(ctx: ExportContext) -> dict:
    """The FP16 artifact's overflow check when this export built one, else the same check run now."""
    if "onnx-fp16" in ctx.artifacts:
        return ctx.artifacts["onnx-fp16"]["fp16"]
    from vgg_deploy.export.fp16 import overflow_nodes

    return overflow_nodes(ctx.path("onnx"), ctx.calibration_batches()[:2], input_name=INPUT_NAME)


def _checked_parity(name, precision, path: Path, reference, logits, labels) -> dict:
    parity = compare(reference, logits, labels)
    console.print(f"{name}: parity with PyTorch: {parity.summary()}")
    if not parity.within(precision):
        path.unlink(missing_ok=True)
        raise ExportError(f"{name} is beyond parity tolerance with PyTorch: {parity.summary()}"
                          + (f", {parity.non_finite} non-finite logits" if parity.non_finite else ""))
    return parity.to_dict()


def _engine_parity(ctx: ExportContext, name: str, path: Path) -> dict:
    """An engine is checked against PyTorch on test like the ONNX files: FP16 within FP16's tolerance, INT8
    within --max-accuracy-drop when one is given (its figures are recorded either way)."""
    from vgg_deploy.runners.tensorrt_runner import TensorRTRunner

    precision, max_drop = PRECISION[name], ctx.options.max_accuracy_drop
    with TensorRTRunner(path, name=name, precision=precision) as runner:
        logits = run_batches(runner, ctx.test_batches)
    if precision != "int8":
        return _checked_parity(name, precision, path, ctx.reference, logits, ctx.test_labels)
    parity = compare(ctx.reference, logits, ctx.test_labels)
    figures = parity.with_drop()
    console.print(f"{name}: against PyTorch: {parity.summary()}")
    problem = None
    if parity.non_finite:
        problem = f"{name} gives {parity.non_finite} non-finite logits"
    elif max_drop is not None and figures["drop_points"] > max_drop:
        problem = (f"{name} loses {figures['drop_points']:.2f} points of test top-1 against PyTorch, beyond "
                   f"--max-accuracy-drop {max_drop}")
    if problem:
        path.unlink(missing_ok=True)
        raise ExportError(problem)
    return {**figures, "max_accuracy_drop": max_drop}
