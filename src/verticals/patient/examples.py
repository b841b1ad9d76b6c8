"""The example chest CT reports that ship with the package (fictitious patients), with their titles:
what the web page offers to try, and what the evaluation asks its questions about."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources


@dataclass(frozen=True)
class Example:
    """One bundled report: its id (`ct_01`), a short title and its text."""

    id: str
    title: str
    text: str


@lru_cache(maxsize=1)
def examples() -> dict[str, Example]:
    """The bundled reports by id, in order."""
    folder = resources.files("verticals.patient") / "reports"
    table = tomllib.loads((folder / "reports.toml").read_text("utf-8"))
    return {name: Example(name, table[name]["title"], (folder / f"{name}.txt").read_text("utf-8"))
            for name in sorted(table)}
