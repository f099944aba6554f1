from __future__ import annotations

from pathlib import Path

import typer

from vgg_deploy.cli.errors import user_errors
from vgg_deploy.console import console


def sample_data_command(
    out: Path = typer.Argument(..., help="Folder to write the ImageFolder tree into."),
    images_per_class: int = typer.Option(60, min=2, help="Images per class."),
    size: int = typer.Option(96, min=32, help="Image side in pixels."),
    seed: int = typer.Option(0, help="Seed; the same seed always draws the same images."),
) -> None:
    """Write the bundled sample data set (procedural shapes and textures; no download)."""
    from vgg_deploy.fileio import check_writable_dir
    from vgg_deploy.sample_data import CLASSES, write_sample_data

    with user_errors():
        check_writable_dir(out)
        write_sample_data(out, images_per_class=images_per_class, size=size, seed=seed)
    console.print(f"sample data: {len(CLASSES)} classes x {images_per_class} images -> {out}")
