"""One rich console for the whole package, and the training progress bar."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# Off a terminal (CI logs, pipes) rich assumes 80 columns and squeezes tables; logs can be wider.
console = Console(highlight=False, markup=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
error_console = Console(stderr=True, highlight=False, markup=False, soft_wrap=True)


def progress_bar(to: Console | None = None) -> Progress:
    """On `console` by default; commands whose stdout is their result (predict) draw it on stderr."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[metrics]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=to or console,
        transient=True,
    )
