from __future__ import annotations

from pathlib import Path

import typer

from vgg_deploy.cli.errors import user_errors


def demo_command(
    out: Path = typer.Option(Path("demo"), "--out", "-o", help="Folder for the demo's data, run and reports."),
    overwrite: bool = typer.Option(False, help="Replace an existing demo folder."),
    epochs: int = typer.Option(12, min=1, help="Epochs of the transfer step."),
) -> None:
    """Sample data -> finetune -> export -> benchmark, printing each step's output folder."""
    from vgg_deploy.demo import run_demo

    with user_errors():
        run_demo(out, overwrite=overwrite, epochs=epochs)
