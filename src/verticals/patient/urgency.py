"""Red flags: symptoms described in a question (`urgent.toml`) and urgent findings the report
states (the lexicon's `urgent` and `urgent_if`). Either puts an urgent-contact notice first. Rules,
not the classifier, decide this: a missed emergency costs more than a needless notice."""

from __future__ import annotations

import re
import tomllib
from functools import lru_cache
from importlib import resources

from verticals.patient.findings import Mention


@lru_cache(maxsize=1)
def _red_flags() -> re.Pattern[str]:
    table = tomllib.loads(resources.files("verticals.patient").joinpath("urgent.toml").read_text("utf-8"))
    phrases = sorted({" ".join(p.lower().split()) for p in table["phrases"]}, key=len, reverse=True)

    def pattern(phrase: str) -> str:
        words = [re.escape(w).replace("'", "'?") for w in phrase.split()]
        return r"\s+".join(words)

    words = r"(?<![\w'])(?:" + "|".join(pattern(p) for p in phrases) + r")(?![\w'])"
    return re.compile("|".join([words, *(f"(?:{p})" for p in table.get("patterns", ()))]))


def red_flags(question: str) -> list[str]:
    """The red-flag phrases a question holds (empty when none).

    Example:
        >>> red_flags("My husband cant breathe and his lips are blue")
        ['cant breathe', 'lips are blue']
    """
    text = question.lower().replace("\u2019", "'")
    return [m.group() for m in _red_flags().finditer(text)]


def urgent_findings(mentions: list[Mention]) -> list[Mention]:
    """The report's mentions that need prompt care (present or possible, urgent by kind or qualifier)."""
    return [m for m in mentions if m.urgent]
