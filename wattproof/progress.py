"""Progress display for the long commands (``anchor``, ``verify``, ``audit run``): a rich bar on stderr.

Owns: ``progress(label, unit)``, a context manager yielding ``update(done, total)``. Drawn only when stderr
is a terminal and not disabled (``quiet``, e.g. with ``--json``): stdout stays the command's result, and a
script or a test reading stderr sees only errors, never a bar's last frame. ``total`` None: a spinner
with the elapsed time (for steps that cannot count their work).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress(label: str, unit: str = "", quiet: bool = False) -> Iterator[Callable[[int, int | None], None]]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True)
    shown = console.is_terminal and not quiet
    with Progress(SpinnerColumn(), TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn(unit), TimeElapsedColumn(), console=console, transient=True, disable=not shown) as bar:
        task = bar.add_task(label, total=None)

        def update(done: int, total: int | None = None) -> None:
            bar.update(task, completed=done, total=total)

        yield update
