from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from vgg_deploy.cli.errors import user_errors
from vgg_deploy.cli.finetune import Device, Precision


class Allocation(str, Enum):
    uniform = "uniform"
    sensitivity = "sensitivity"


class Criterion(str, Enum):
    taylor = "taylor"
    l1 = "l1"
    l2 = "l2"


def prune_command(
    run: Path = typer.Argument(..., help="A finetune run folder (or an earlier prune's)."),
    out: Path = typer.Option(..., "--out", "-o", help="Pruned run folder to write (same contract as a finetune run)."),
    target_macs: float = typer.Option(None, help="Keep this fraction of the run's multiply-adds, e.g. 0.5."),
    target_speedup: float = typer.Option(None, help="Run this many times faster than the source, measured here "
                                         "(onnxruntime FP32, CPU, batch 1), e.g. 2."),
    criterion: Criterion = typer.Option(Criterion.taylor, help="Which channels go: lowest |activation x gradient| "
                                        "(taylor) or weight norm (l1, l2)."),
    allocation: Allocation = typer.Option(
        Allocation.uniform, help="Per-layer widths: every layer keeps the same fraction (uniform), or each layer's "
        "width follows its measured val-loss sensitivity (sensitivity)."),
    sensitivity_images: int = typer.Option(128, min=1, help="--allocation sensitivity: val images each layer's "
                                           "sensitivity is measured on (a class-stratified sample)."),
    sensitivity_from: Path = typer.Option(
        None, help="--allocation sensitivity: reuse the sensitivity table an earlier prune of the same RUN measured "
        "(its --out folder), instead of measuring it again; it must have been measured with the same --criterion, "
        "--seed and --sensitivity-images."),
    steps: int = typer.Option(3, min=1, help="Prune in this many steps, recovering after each."),
    epochs: int = typer.Option(2, min=1, help="Recovery epochs per step."),
    distill: bool = typer.Option(True, help="Distil from the unpruned model while recovering."),
    round_to: int = typer.Option(8, min=1, help="Widths are multiples of this (8 keeps INT8 and tensor-core tiles full)."),
    lr: float = typer.Option(1e-4, help="Recovery rate of the conv layers; fc6-fc8 train at a tenth of it."),
    batch_size: int = typer.Option(32, min=1),
    latency_rounds: int = typer.Option(3, min=0, help="Alternating timing rounds per step (0: do not measure)."),
    seed: int = typer.Option(0),
    device: Device = typer.Option(Device.auto),
    precision: Precision = typer.Option(Precision.auto, help="Autocast precision for recovery training."),
    workers: int = typer.Option(None, min=0, help="Data-loading worker processes (default: cores - 1)."),
    resume: bool = typer.Option(False, help="Continue the interrupted prune in --out with its saved configuration."),
) -> None:
    """Prune RUN's channels (structured) with recovery training, to a run that does less work."""
    from vgg_deploy.prune import PruneConfig, prune

    config = PruneConfig(
        run=str(run), out=str(out), target_macs=target_macs, target_speedup=target_speedup, criterion=criterion.value,
        allocation=allocation.value, sensitivity_images=sensitivity_images,
        sensitivity_from=None if sensitivity_from is None else str(sensitivity_from), steps=steps, epochs=epochs,
        distill=distill, round_to=round_to, lr=lr, batch_size=batch_size,
        latency_rounds=latency_rounds, seed=seed, device=device.value, precision=precision.value, workers=workers,
    )
    with user_errors():
        prune(config, resume=resume)
