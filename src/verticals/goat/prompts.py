"""Prompt styles (data in `prompts.toml`) and the chat messages they make for a meme.

Zero-shot is the official prompt verbatim; chain-of-thought asks for a final `Answer:` line;
k-shot shows `shots` labelled memes of the task's train split (half of each class, chosen by
seed, never the meme asked about) as earlier turns, images included.
"""

from __future__ import annotations

import hashlib
import random
import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from typing import Any

from verticals.goat.config import GoatError
from verticals.goat.data import Meme
from verticals.goat.tasks import Task
from verticals.llm import Message, image_part

ANSWER_RULES = ("plain", "final_line")


@dataclass(frozen=True)
class PromptStyle:
    """One way of asking: the template, how long an answer may be, how it is read, how many shots."""

    name: str
    template: str
    max_tokens: int
    answer: str
    shots: int = 0

    @property
    def fingerprint(self) -> str:
        """Changes whenever the wording or a setting does (recorded in results, part of cache keys)."""
        text = "\x1f".join([self.template, str(self.max_tokens), self.answer, str(self.shots)])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def question(self, task: Task, meme: Meme) -> str:
        return fill(self.template, {"text": meme.text, "adjective": task.adjective})


def fill(template: str, values: dict[str, str]) -> str:
    """`template` with each `{name}` of `values` replaced, in one pass: not format() or chained
    replace(), since a value (a caption, an answer) may itself hold "{adjective}" or braces."""
    pattern = re.compile(r"\{(" + "|".join(map(re.escape, values)) + r")\}")
    return pattern.sub(lambda match: values[match.group(1)], template)


def prompt_styles() -> dict[str, PromptStyle]:
    """The bundled prompt styles, checked."""
    table = tomllib.loads(resources.files("verticals.goat").joinpath("prompts.toml").read_text("utf-8"))
    styles = {}
    for name, entry in table.items():
        template = entry.get("template")
        if not isinstance(template, str) or "{text}" not in template or "{adjective}" not in template:
            raise GoatError(f"prompts.toml [{name}]: the template must contain {{text}} and {{adjective}}")
        if entry.get("answer") not in ANSWER_RULES:
            raise GoatError(f"prompts.toml [{name}]: answer must be one of {', '.join(ANSWER_RULES)}")
        styles[name] = PromptStyle(name, template, int(entry.get("max_tokens", 16)), entry["answer"],
                                   int(entry.get("shots", 0)))
    return styles


def get_style(name: str) -> PromptStyle:
    styles = prompt_styles()
    if name not in styles:
        raise GoatError(f"unknown prompt style {name!r}; choose {', '.join(styles)}")
    return styles[name]


def messages_for(style: PromptStyle, task: Task, meme: Meme, shots: list[Meme] = (),  # type: ignore[assignment]
                 *, images: bool = True) -> list[Message]:
    """The conversation asking `style`'s question about `meme`, after the labelled `shots`."""
    messages: list[Message] = []
    for shot in shots:
        messages.append({"role": "user", "content": _content(style, task, shot, images)})
        messages.append({"role": "assistant", "content": "Yes" if shot.label else "No"})
    messages.append({"role": "user", "content": _content(style, task, meme, images)})
    return messages


def _content(style: PromptStyle, task: Task, meme: Meme, images: bool) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": style.question(task, meme)}]
    if images and meme.image is not None:
        parts.append(image_part(meme.image))
    return parts


def choose_shots(pool: list[Meme], k: int, seed: int, meme_id: str) -> list[Meme]:
    """`k` labelled memes from `pool` (the train split), half of each class, never `meme_id`, fixed by seed.

    Raises:
        GoatError: the pool has too few memes of a class.
    """
    if k == 0:
        return []
    rng = random.Random(f"{seed}:{meme_id}")
    by_label = {label: [m for m in pool if m.label == label and m.id != meme_id] for label in (0, 1)}
    wanted = {1: (k + 1) // 2, 0: k // 2}
    short = [label for label in (0, 1) if len(by_label[label]) < wanted[label]]
    if short:
        raise GoatError(f"{k}-shot prompts need {wanted[1]} abusive and {wanted[0]} other memes in the train "
                        f"split, which has {len(by_label[1])} and {len(by_label[0])}")
    chosen = rng.sample(by_label[1], wanted[1]) + rng.sample(by_label[0], wanted[0])
    rng.shuffle(chosen)
    return chosen
