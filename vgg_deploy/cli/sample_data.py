from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from vgg_deploy.cli.errors import user_errors


class Family(str, Enum):
    # Mirrors vgg_deploy.sample_data.FAMILIES (a test keeps them equal); listed here so --help needs no import.
    shapes = "shapes"
    more_shapes = "more-shapes"
    textures = "textures"
from vgg_deploy.console import console


def sample_data_command(
    out: Path = typer.Argument(..., help="Folder to write the ImageFolder tree into."),
    images_per_class: int = typer.Option(60, min=2, help="Images per class."),
    size: int = typer.Option(96, min=32, help="Image side in pixels."),
    seed: int = typer.Option(0, help="Seed; the same seed always draws the same images."),
    family: Family = typer.Option(Family.shapes, help="shapes; more-shapes (new classes, same style: a similar "
                                  "transfer target); textures (a different one)."),
) -> None:
    """Write a bundled sample data set (procedural shapes and textures; no download)."""
    from vgg_deploy.fileio import check_writable_dir
    from vgg_deploy.sample_data import FAMILIES, write_sample_data

    with user_errors():
        check_writable_dir(out)
        write_sample_data(out, images_per_class=images_per_class, size=size, seed=seed, family=family.value)
    console.print(f"sample data ({family.value}): {len(FAMILIES[family.value])} classes x {images_per_class} images "
                  f"-> {out}")
