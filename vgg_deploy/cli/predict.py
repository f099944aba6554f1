from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from vgg_deploy.cli.errors import user_errors

# Some inputs were unreadable (each named on stderr and in the output); every other image was classified.
SKIPPED_INPUTS_EXIT = 5


class Backend(str, Enum):
    onnxruntime = "onnxruntime"
    openvino = "openvino"
    torch = "torch"
    tensorrt = "tensorrt"


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


def predict_command(
    run: Path = typer.Argument(..., help="Run folder (with export/ for artifacts other than pytorch)."),
    paths: list[Path] = typer.Argument(..., help="Images and folders (searched recursively)."),
    artifact: str = typer.Option(None, help="pytorch, onnx, onnx-fp16, onnx-int8, trt-fp16 or trt-int8 (default: the "
                                 "fastest that passed its accuracy check at export)."),
    backend: Backend = typer.Option(None, help="Runtime (default: the artifact's own; onnxruntime for ONNX files)."),
    top_k: int = typer.Option(5, min=1, help="Classes listed per image."),
    batch_size: int = typer.Option(16, min=1, help="Images per inference call."),
    threads: int = typer.Option(None, min=1, help="CPU threads (default: the runtime's own)."),
    output_format: OutputFormat = typer.Option(OutputFormat.table, "--format", help="table, json or csv."),
    out: Path = typer.Option(None, help="Write the predictions here instead of stdout (written whole, then renamed)."),
) -> None:
    """Classify images with any artifact of a run; unreadable files are listed and skipped."""
    from vgg_deploy.fileio import write_text
    from vgg_deploy.predict import PredictOptions, predict
    from vgg_deploy.predict.classify import render

    with user_errors():
        from vgg_deploy.process import use_threads

        use_threads(threads)
        result = predict(run, list(paths), PredictOptions(artifact=artifact, backend=backend.value if backend else None,
                                                          top_k=top_k, batch_size=batch_size, threads=threads))
        text = render(result, output_format.value)
        if out is None:
            typer.echo(text, nl=False)
        else:
            write_text(out, text)
            from vgg_deploy.console import error_console

            error_console.print(f"{len(result.rows)} predictions -> {out}")
    if result.bad:
        raise typer.Exit(SKIPPED_INPUTS_EXIT)
