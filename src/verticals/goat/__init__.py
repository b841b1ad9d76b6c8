"""GOAT-Bench (Lin et al., 2024, arXiv 2401.01523): how well models recognise abuse in memes.

Five binary tasks (hatefulness, misogyny, offensiveness, sarcasm, harmfulness), the official
zero-shot prompt, macro-F1 per task and its mean; any model through `verticals.llm`.

Example:
    >>> from verticals.goat import EvalSettings, evaluate, write_fixture            # doctest: +SKIP
    >>> write_fixture(Path("memes"))                                                 # doctest: +SKIP
    >>> evaluate(EvalSettings(Path("memes"), "ocr+bundled", Path("runs/goat")))      # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from verticals.goat.config import GoatError

if TYPE_CHECKING:
    from verticals.goat.data import Meme, load_split
    from verticals.goat.extract import read_answer
    from verticals.goat.fixture import write_fixture
    from verticals.goat.runner import EvalSettings, evaluate
    from verticals.goat.tasks import Task, paper_tasks

__all__ = ["EvalSettings", "GoatError", "Meme", "Task", "evaluate", "load_split", "paper_tasks", "read_answer",
           "write_fixture"]

_LAZY = {"Meme": "data", "load_split": "data", "read_answer": "extract", "write_fixture": "fixture",
         "EvalSettings": "runner", "evaluate": "runner", "Task": "tasks", "paper_tasks": "tasks"}


def __getattr__(name: str) -> Any:
    # Pillow, scikit-learn and the models load only when used (keeps `verticals --help` fast)
    if name in _LAZY:
        return getattr(importlib.import_module(f"verticals.goat.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'verticals.goat' has no attribute {name!r}")
