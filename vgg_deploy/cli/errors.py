"""Typed errors -> one line on stderr and an exit code; never a traceback for the user's mistakes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer

from vgg_deploy.console import error_console
from vgg_deploy.errors import VggDeployError


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except VggDeployError as err:
        error_console.print(f"error: {err}", markup=False)
        raise typer.Exit(err.exit_code) from None
    except KeyboardInterrupt:
        error_console.print("interrupted; finished files are intact, partial ones were discarded", markup=False)
        raise typer.Exit(130) from None
