"""`vgg-deploy`: one Typer app; each command lives in its own module and only parses and delegates."""

from __future__ import annotations

import typer

from vgg_deploy import __version__
from vgg_deploy.cli import benchmark, demo, export, finetune, predict, prune, sample_data, serve

app = typer.Typer(
    name="vgg-deploy",
    help="A folder of labelled images to deployable, measured VGG16 models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"vgg-deploy {__version__}")
        raise typer.Exit()


@app.callback()
def _entry(
    version: bool = typer.Option(False, "--version", help="Print the version and exit.", callback=_show_version,
                                 is_eager=True),
) -> None:
    """A folder of labelled images to deployable, measured VGG16 models."""
    from vgg_deploy.process import quiet_library_logging

    quiet_library_logging()


app.command("finetune")(finetune.finetune_command)
app.command("prune")(prune.prune_command)
app.command("export")(export.export_command)
app.command("benchmark")(benchmark.benchmark_command)
app.command("predict")(predict.predict_command)
app.command("serve")(serve.serve_command)
app.command("sample-data")(sample_data.sample_data_command)
app.command("demo")(demo.demo_command)


def main() -> None:
    app()
