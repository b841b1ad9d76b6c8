"""The tasks of a meme set: GOAT-Bench's five, and any a user's own set declares in its `goat.toml`.

A task is data (name, the adjective the prompt asks about, what labels 1 and 0 mean), read from
TOML and checked at start, so a new abuse category needs no code.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from verticals.goat.config import GoatError

#: the file next to a meme set's task folders that declares its own tasks (and marks a fixture)
SET_FILE = "goat.toml"
PAPER_TASKS = ("hatefulness", "misogyny", "offensiveness", "sarcasm", "harmfulness")
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,39}")


@dataclass(frozen=True)
class Task:
    """One binary task; label 1 is the abusive class.

    Example:
        >>> Task("misogyny", "misogynistic", "misogynistic", "non-misogynistic").labels
        ('non-misogynistic', 'misogynistic')
    """

    name: str
    adjective: str
    positive: str
    negative: str
    description: str = ""
    opposites: tuple[str, ...] = ()

    @property
    def labels(self) -> tuple[str, str]:
        """What labels 0 and 1 mean."""
        return self.negative, self.positive


@dataclass(frozen=True)
class MemeSetInfo:
    """What a meme set's folder says about itself: its tasks, and whether it is the synthetic fixture."""

    tasks: dict[str, Task]
    fixture: bool = False
    name: str = ""


def paper_tasks() -> dict[str, Task]:
    """GOAT-Bench's five tasks, in the paper's order."""
    text = resources.files("verticals.goat").joinpath("tasks.toml").read_text(encoding="utf-8")
    return _tasks(tomllib.loads(text), "the bundled tasks.toml")


def read_set_info(data: Path) -> MemeSetInfo:
    """The paper's tasks plus those declared in `data/goat.toml`, and the set's own flags.

    Raises:
        GoatError: `goat.toml` is not valid TOML, declares a task badly, or redefines a paper task.
    """
    tasks = paper_tasks()
    file = data / SET_FILE
    if not file.is_file():
        return MemeSetInfo(tasks)
    try:
        table = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise GoatError(f"{file} is not valid TOML: {err}") from err
    unknown = set(table) - {"tasks", "fixture", "name"}
    if unknown:
        raise GoatError(f"{file}: unknown keys {sorted(unknown)}; allowed are tasks, fixture and name")
    own = _tasks(table, str(file))
    for name, task in own.items():
        if name in tasks and task != tasks[name]:
            raise GoatError(f"{file} redefines the paper task {name!r}; give your task another name")
    return MemeSetInfo({**tasks, **own}, fixture=table.get("fixture") is True, name=str(table.get("name", "")))


def _tasks(table: dict[str, Any], where: str) -> dict[str, Task]:
    entries = table.get("tasks", {})
    if not isinstance(entries, dict):
        raise GoatError(f"{where}: [tasks] must be a table of tables, e.g. [tasks.bullying]")
    tasks = {}
    for name, entry in entries.items():
        if not _NAME.fullmatch(name):
            raise GoatError(f"{where}: task name {name!r} must be lowercase letters, digits, '-' or '_'")
        if not isinstance(entry, dict):
            raise GoatError(f"{where}: [tasks.{name}] must be a table")
        extra = set(entry) - {"adjective", "positive", "negative", "description", "opposites"}
        if extra:
            raise GoatError(f"{where}: [tasks.{name}] has unknown keys {sorted(extra)}")
        adjective = entry.get("adjective")
        if not isinstance(adjective, str) or not adjective.strip():
            raise GoatError(f"{where}: [tasks.{name}] needs an adjective, the word the prompt asks about "
                            "(e.g. adjective = \"bullying\")")
        positive = str(entry.get("positive") or adjective)
        negative = str(entry.get("negative") or f"non-{adjective}")
        opposites = entry.get("opposites", [])
        if not isinstance(opposites, list) or not all(isinstance(o, str) and o.strip() for o in opposites):
            raise GoatError(f"{where}: [tasks.{name}] opposites must be a list of words, e.g. [\"harmless\"]")
        tasks[name] = Task(name, adjective.strip(), positive, negative, str(entry.get("description", "")),
                           tuple(o.strip() for o in opposites))
    return tasks


def choose_tasks(info: MemeSetInfo, wanted: str) -> list[Task]:
    """The tasks named by `wanted`: `all` (those with a folder in the set, checked later) or a comma list."""
    if wanted.strip() == "all":
        return list(info.tasks.values())
    names = [n.strip() for n in wanted.split(",") if n.strip()]
    unknown = [n for n in names if n not in info.tasks]
    if unknown or not names:
        raise GoatError(f"unknown task {', '.join(map(repr, unknown)) or '(none given)'}; known tasks are "
                        f"{', '.join(info.tasks)} (declare your own in {SET_FILE} next to the task folders)")
    return [info.tasks[n] for n in dict.fromkeys(names)]
