from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from vgg_deploy.cli.errors import user_errors


class Equalize(str, Enum):
    auto = "auto"
    on = "on"
    off = "off"


class CalibMethod(str, Enum):
    entropy = "entropy"
    minmax = "minmax"
    percentile = "percentile"
    auto = "auto"


def export_command(
    run: Path = typer.Argument(..., help="Run folder written by `vgg-deploy finetune`."),
    formats: str = typer.Option(
        "onnx,onnx-fp16,onnx-int8", help="Comma-separated: onnx, onnx-fp16, onnx-int8, trt-fp16, trt-int8, or all."
    ),
    calib_images: int = typer.Option(128, min=1, help="Training images (class-stratified) to calibrate INT8 on."),
    calib_method: CalibMethod = typer.Option(
        CalibMethod.minmax, help="INT8 activation ranges: minmax, percentile, entropy, or auto (the one that agrees "
        "best with FP32 on the decision images)."),
    max_accuracy_drop: float = typer.Option(
        None, min=0.0, help="INT8 budget in points of top-1 disagreement with FP32 on val (never test); keeps "
        "the layers that buy the most agreement per cost out of INT8 until met.",
    ),
    equalize: Equalize = typer.Option(
        Equalize.auto, help="INT8 from the range-equalized FP32 model (an exact rewrite, so one scale per tensor serves "
        "small channels too): auto builds both and keeps the one that agrees better with FP32 on the decision images."),
    max_fp32_layers: int = typer.Option(4, min=1, help="Most layers the INT8 budget may keep out of INT8."),
    check_images: int = typer.Option(256, min=1, help="Test images for parity figures, and val images for INT8 decisions."),
    eval_memory_mb: float = typer.Option(2048, min=0.0, help="Check images are held in memory as uint8 crops up to "
                                         "this many MB, and streamed from disk on each pass above it."),
    min_batch: int = typer.Option(1, min=1, help="TensorRT profile: smallest batch."),
    opt_batch: int = typer.Option(8, min=1, help="TensorRT profile: batch to optimise for."),
    max_batch: int = typer.Option(32, min=1, help="TensorRT profile: largest batch."),
    workspace_gib: float = typer.Option(4.0, min=0.1, help="TensorRT builder workspace limit (GiB)."),
    seed: int = typer.Option(0),
    triton_repo: Path = typer.Option(
        None, help="Also write a Triton model repository here (one model per artifact; needs tritonclient[grpc])."
    ),
) -> None:
    """Export ONNX, FP16 and calibrated INT8 artifacts (and TensorRT engines where possible)."""
    from vgg_deploy.export.pipeline import ExportOptions, export
    from vgg_deploy.artifacts.tensorrt_meta import BatchProfile

    with user_errors():
        options = ExportOptions(
            formats=[f.strip() for f in formats.split(",") if f.strip()],
            calib_images=calib_images,
            calib_method=calib_method.value,
            max_accuracy_drop=max_accuracy_drop,
            max_fp32_layers=max_fp32_layers,
            equalize=equalize.value,
            check_images=check_images,
            eval_memory_mb=eval_memory_mb,
            profile=BatchProfile(min_batch, opt_batch, max_batch),
            workspace_gib=workspace_gib,
            seed=seed,
            triton_repo=str(triton_repo) if triton_repo else None,
        )
        export(run, options)
