"""The Gricean judge of `verticals patient eval --judge MODEL`: a language model rates each answer
1-5 on quality, quantity, relation and manner (`rubric.toml`). A reply that holds no digit 1-5 is
counted as unreadable, never turned into a score."""

from __future__ import annotations

import re
import tomllib
from functools import lru_cache
from importlib import resources
from typing import Any

_DIGIT = re.compile(r"\b([1-5])\b")
_FIELD = re.compile(r"\{(question|report|answer|maxim|description|low|high)\}")


@lru_cache(maxsize=1)
def rubric() -> dict[str, Any]:
    """The bundled rubric: the prompt template, reply length and each maxim's wording."""
    return tomllib.loads(resources.files("verticals.patient").joinpath("rubric.toml").read_text("utf-8"))


def rate(model: Any, question: str, cited: list[str], answer: str) -> dict[str, int | None]:
    """Each maxim's rating (1-5), or None where the judge's reply held no digit 1-5."""
    table = rubric()
    prompts = []
    for maxim, words in table["maxims"].items():
        values = {"question": question, "report": "\n".join(f"- {s}" for s in cited) or "(none)",
                  "answer": answer, "maxim": maxim, "description": words["description"], "low": words["low"],
                  "high": words["high"]}
        prompts.append([{"role": "user", "content": _fill(table["template"], values)}])
    replies = model.chat_batch(prompts, max_tokens=int(table["max_tokens"]), temperature=0.0)
    ratings: dict[str, int | None] = {}
    for maxim, reply in zip(table["maxims"], replies):
        found = _DIGIT.search(reply or "")
        ratings[maxim] = int(found.group(1)) if found else None
    return ratings


def _fill(template: str, values: dict[str, str]) -> str:
    """One pass over the template: an answer or question may itself hold "{answer}"."""
    return _FIELD.sub(lambda match: values[match.group(1)], template)
