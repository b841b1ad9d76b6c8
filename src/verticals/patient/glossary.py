"""The glossary: plain-language definitions of radiology terms (`glossary.toml`, written for this
project), found in report sentences and questions by their name, synonyms and abbreviations."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from verticals.patient.config import PatientError

CATEGORIES = ("finding", "descriptor", "anatomy", "procedure", "device", "abbreviation", "comparison")


@dataclass(frozen=True)
class Term:
    """One glossary entry: its name, the other ways reports write it, what it means, where to check."""

    term: str
    synonyms: tuple[str, ...]
    category: str
    definition: str
    note: str


class Glossary:
    """Terms by every way of writing them, with one pattern to find them in text."""

    def __init__(self, terms: list[Term]) -> None:
        self.terms = terms
        self._by_name: dict[str, Term] = {}
        for term in terms:
            for name in (term.term, *term.synonyms):
                key = " ".join(name.lower().split())
                if key in self._by_name and self._by_name[key] is not term:
                    raise PatientError(f"glossary.toml: {key!r} is under {self._by_name[key].term!r} and "
                                       f"{term.term!r}")
                self._by_name[key] = term
        names = sorted(self._by_name, key=len, reverse=True)
        self._pattern = re.compile(r"(?<![\w-])(?:" + "|".join(r"\s+".join(map(re.escape, n.split())) for n in names)
                                   + r")(?![\w-])", re.IGNORECASE)

    def lookup(self, name: str) -> Term | None:
        """The entry for a name, synonym or abbreviation (any case), or None."""
        return self._by_name.get(" ".join(name.lower().split()))

    def find(self, text: str) -> list[tuple[int, int, Term]]:
        """(start, end, entry) of each term in `text`, longest first where two overlap."""
        return [(m.start(), m.end(), self._by_name[" ".join(m.group().lower().split())])
                for m in self._pattern.finditer(text)]


@lru_cache(maxsize=1)
def glossary() -> Glossary:
    """The bundled glossary, checked.

    Raises:
        PatientError: a field missing or mistyped, an unknown category, a name under two entries.
    """
    table = tomllib.loads(resources.files("verticals.patient").joinpath("glossary.toml").read_text("utf-8"))
    terms = []
    for number, entry in enumerate(table.get("terms", []), 1):
        try:
            term = Term(str(entry["term"]), tuple(entry.get("synonyms", ())), str(entry["category"]),
                        str(entry["definition"]), str(entry["note"]))
        except (KeyError, TypeError) as err:
            raise PatientError(f"glossary.toml entry {number}: missing or mistyped field {err}") from err
        if term.category not in CATEGORIES:
            raise PatientError(f"glossary.toml entry {number} ({term.term}): category must be one of "
                               f"{', '.join(CATEGORIES)}")
        terms.append(term)
    return Glossary(terms)
