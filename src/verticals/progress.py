"""The one progress-bar helper: a Rich bar on stderr, silent when not wanted."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Advance(Protocol):
    def __call__(self, n: int = 1, **fields: object) -> None: ...


@contextmanager
def progress_bar(description: str, total: int, *, enabled: bool = True) -> Iterator[Advance]:
    """Yield `advance(n, **fields)`; a bar is drawn on stderr when `enabled`.

    Extra fields (for example `loss=1.23`) are shown after the bar.
    """
    if not enabled:
        yield lambda n=1, **fields: None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        task = bar.add_task(description, total=total, info="")

        def advance(n: int = 1, **fields: object) -> None:
            if fields:
                bar.update(task, advance=n, info="  ".join(f"{k} {v}" for k, v in fields.items()))
            else:
                bar.update(task, advance=n)

        yield advance
