"""The taxonomy of information needs (`themes.toml`): what people ask about a chest imaging report,
and per theme the response policy the answer must follow; and the question set written for this
project (`questions/train.jsonl`, `questions/test.jsonl`) that teaches and tests the classifier."""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from verticals.patient.config import PatientError

ANSWER_FROM = ("glossary", "report", "general")
VOICES = ("patient", "caregiver", "worried", "terse", "misspelt")
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Policy:
    """How an answer of a theme must behave: where it draws from, whether it refers to the care
    team, and what it must, may and must never do (the code enforces these, not the prompt)."""

    answer_from: str
    referral: bool
    must: tuple[str, ...]
    may: tuple[str, ...]
    must_not: tuple[str, ...]


@dataclass(frozen=True)
class Theme:
    """One kind of question: `verified` is true for the paper's five themes."""

    id: str
    name: str
    description: str
    verified: bool
    examples: tuple[str, ...]
    policy: Policy


@dataclass(frozen=True)
class Question:
    """A question of the project's set, with its theme and the voice it is written in."""

    text: str
    theme: str
    voice: str


@lru_cache(maxsize=1)
def themes() -> dict[str, Theme]:
    """The bundled themes, in file order, checked.

    Raises:
        PatientError: a field missing or mistyped, or an unknown `answer_from`.
    """
    table = tomllib.loads(resources.files("verticals.patient").joinpath("themes.toml").read_text("utf-8"))
    found = {}
    for key, entry in table.get("themes", {}).items():
        try:
            rules = entry["policy"]
            policy = Policy(str(rules["answer_from"]), bool(rules["referral"]), tuple(rules.get("must", ())),
                            tuple(rules.get("may", ())), tuple(rules.get("must_not", ())))
            found[key] = Theme(key, str(entry["name"]), str(entry["description"]), bool(entry["verified"]),
                               tuple(entry.get("examples", ())), policy)
        except (KeyError, TypeError) as err:
            raise PatientError(f"themes.toml [themes.{key}]: missing or mistyped field {err}") from err
        if policy.answer_from not in ANSWER_FROM:
            raise PatientError(f"themes.toml [themes.{key}.policy]: answer_from must be one of "
                               f"{', '.join(ANSWER_FROM)}")
    if not found:
        raise PatientError("themes.toml holds no themes")
    return found


@lru_cache(maxsize=2)
def questions(split: str) -> tuple[Question, ...]:
    """The question set's `train` or `test` file, each line checked against the themes.

    Raises:
        PatientError: an unknown split, a line that is not a question of a known theme and voice.
    """
    if split not in SPLITS:
        raise PatientError(f"the question set has splits {', '.join(SPLITS)}, not {split!r}")
    known = themes()
    text = resources.files("verticals.patient").joinpath("questions", f"{split}.jsonl").read_text("utf-8")
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            question = Question(str(row["question"]), str(row["theme"]), str(row["voice"]))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise PatientError(f"questions/{split}.jsonl:{number}: not a question line ({err})") from err
        if question.theme not in known or question.voice not in VOICES:
            raise PatientError(f"questions/{split}.jsonl:{number}: unknown theme {question.theme!r} or voice "
                               f"{question.voice!r}")
        found.append(question)
    return tuple(found)
