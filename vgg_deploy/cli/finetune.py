from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from vgg_deploy.cli.errors import user_errors


class Case(str, Enum):
    auto = "auto"
    small_similar = "small-similar"
    small_different = "small-different"
    large_similar = "large-similar"
    large_different = "large-different"


class Head(str, Enum):
    auto = "auto"
    classic = "classic"
    pooled = "pooled"


class ImageCheck(str, Enum):
    cached = "cached"
    full = "full"
    header = "header"


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Precision(str, Enum):
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


def finetune_command(
    data: Path = typer.Argument(..., help="ImageFolder: one sub-folder per class (or train/, val/ and optionally test/ holding them)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder to write."),
    case: Case = typer.Option(Case.auto, help="Transfer-learning case; auto estimates size and similarity."),
    weights: str = typer.Option("imagenet", help="imagenet, none, another run's folder (its fc8 is dropped), PATH to a "
                                "torchvision VGG16 state dict (.safetensors/.pt; whole, or conv-only features.*), or a "
                                "Keras VGG16 weights file (.h5/.weights.h5)."),
    head: Head = typer.Option(Head.auto, help="classic (fc6-fc8) or pooled (global average + linear); auto: pooled "
                              "when the weights have no fc6/fc7."),
    image_size: int = typer.Option(224, min=32, help="Square input side in pixels."),
    epochs: int = typer.Option(10, min=1),
    batch_size: int = typer.Option(32, min=1),
    lr: float = typer.Option(None, help="Head rate with pretrained weights (1e-3); conv rate from scratch (1e-4)."),
    weight_decay: float = typer.Option(0.05, min=0.0, help="AdamW's decoupled weight decay."),
    val_split: float = typer.Option(0.2, help="Validation fraction when DATA has no train/ and val/."),
    test_split: float = typer.Option(0.2, help="Test fraction when DATA has no test/ (held out of train/ if DATA "
                                     "has train/ and val/)."),
    small_max_per_class: int = typer.Option(1000, min=1, help="--case auto: a data set is small below this many "
                                            "training images per class."),
    seed: int = typer.Option(0),
    device: Device = typer.Option(Device.auto),
    precision: Precision = typer.Option(Precision.auto, help="Autocast precision; auto = bf16/fp16 where native."),
    patience: int = typer.Option(5, min=1, help="Early stopping: epochs without val top-1 gain."),
    skip_bad_images: bool = typer.Option(False, help="Leave corrupt images out (listed in RUN) instead of stopping."),
    image_check: ImageCheck = typer.Option(ImageCheck.cached, help="cached: decode every image whose path, size "
                                           "and mtime were not checked before; full: decode all again; header: "
                                           "read headers only (misses truncated files)."),
    workers: int = typer.Option(None, min=0, help="Data-loading worker processes (default: cores - 1)."),
    resume: bool = typer.Option(False, help="Continue the interrupted run in --out with its saved configuration."),
    resume_state: bool = typer.Option(True, help="Write resume.pt after each epoch (the trained weights and the "
                                      "optimizer's state: about 1.6 GB for a full VGG16) so --resume can continue "
                                      "an interrupted run; --no-resume-state keeps only the best checkpoint."),
) -> None:
    """Fine-tune VGG16 on DATA with the freezing scheme that fits it."""
    from vgg_deploy.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(
        data=str(data), out=str(out), case=case.value, weights=weights, head=head.value, image_size=image_size, epochs=epochs,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay, val_split=val_split,
        test_split=test_split, small_max_per_class=small_max_per_class, seed=seed, device=device.value,
        precision=precision.value, patience=patience, skip_bad_images=skip_bad_images,
        image_check=image_check.value, workers=workers, resume_state=resume_state,
    )
    with user_errors():
        finetune(config, resume=resume)
