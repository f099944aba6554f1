from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from vgg_deploy.cli.errors import user_errors


class CalibMethod(str, Enum):
    entropy = "entropy"
    minmax = "minmax"
    percentile = "percentile"


def export_command(
    run: Path = typer.Argument(..., help="Run folder written by `vgg-deploy finetune`."),
    formats: str = typer.Option(
        "onnx,onnx-fp16,onnx-int8", help="Comma-separated: onnx, onnx-fp16, onnx-int8, trt-fp16, trt-int8, or all."
    ),
    calib_images: int = typer.Option(128, min=1, help="Training images (class-stratified) to calibrate INT8 on."),
    calib_method: CalibMethod = typer.Option(CalibMethod.entropy, help="INT8 activation-range method."),
    max_accuracy_drop: float = typer.Option(
        None, min=0.0, help="INT8 top-1 budget in points; keeps the most sensitive layers in FP32 until met."
    ),
    check_images: int = typer.Option(256, min=1, help="Val images for parity and accuracy checks."),
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
    from vgg_deploy.export.tensorrt_meta import BatchProfile

    with user_errors():
        options = ExportOptions(
            formats=[f.strip() for f in formats.split(",") if f.strip()],
            calib_images=calib_images,
            calib_method=calib_method.value,
            max_accuracy_drop=max_accuracy_drop,
            check_images=check_images,
            profile=BatchProfile(min_batch, opt_batch, max_batch),
            workspace_gib=workspace_gib,
            seed=seed,
            triton_repo=str(triton_repo) if triton_repo else None,
        )
        export(run, options)
