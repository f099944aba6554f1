"""Typed errors -> one line on stderr and an exit code; never a traceback for the user's mistakes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer

from vgg_deploy.console import error_console
from vgg_deploy.errors import VggDeployError


# Runtimes that come with an extra, not with the core install: a missing one is the install's gap, said in a line.
OPTIONAL_MODULES = {
    "onnxruntime": "pip install 'vgg-deploy[cpu]' (or 'vgg-deploy[gpu]' on a CUDA machine: exactly one of the two)",
    "openvino": "pip install 'vgg-deploy[openvino]'",
    "tritonclient": "pip install 'vgg-deploy[serve]'",
}


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except ModuleNotFoundError as err:
        root = (err.name or "").split(".")[0]
        if root not in OPTIONAL_MODULES:
            raise
        error_console.print(f"error: {root} is not installed; {OPTIONAL_MODULES[root]}", markup=False)
        raise typer.Exit(1) from None
    except VggDeployError as err:
        error_console.print(f"error: {err}", markup=False)
        raise typer.Exit(err.exit_code) from None
    except KeyboardInterrupt:
        error_console.print("interrupted; finished files are intact, partial ones were discarded", markup=False)
        raise typer.Exit(130) from None
