"""Tasks as data: the paper's five, a meme set's own in its goat.toml, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from verticals.goat.config import GoatError
from verticals.goat.tasks import choose_tasks, paper_tasks, read_set_info


def test_the_paper_tasks_and_their_adjectives() -> None:
    tasks = paper_tasks()
    assert list(tasks) == ["hatefulness", "misogyny", "offensiveness", "sarcasm", "harmfulness"]
    assert [t.adjective for t in tasks.values()] == ["hateful", "misogynistic", "offensive", "sarcastic", "harmful"]
    assert tasks["misogyny"].labels == ("non-misogynistic", "misogynistic")


def test_a_meme_set_declares_its_own_task(tmp_path: Path) -> None:
    (tmp_path / "goat.toml").write_text('name = "school memes"\n[tasks.bullying]\nadjective = "bullying"\n')
    info = read_set_info(tmp_path)
    assert info.name == "school memes" and not info.fixture
    assert info.tasks["bullying"].negative == "non-bullying"
    assert [t.name for t in choose_tasks(info, "bullying,sarcasm")] == ["bullying", "sarcasm"]


@pytest.mark.parametrize(("toml", "match"), [
    ("[tasks.hatefulness]\nadjective = \"mean\"\n", "redefines the paper task"),
    ("[tasks.bullying]\npositive = \"bully\"\n", "needs an adjective"),
    ("[tasks.\"Bad Name\"]\nadjective = \"x\"\n", "lowercase"),
    ("[tasks.x]\nadjective = \"x\"\ncolour = 1\n", "unknown keys"),
    ("tasks = 3\n", "table of tables"),
    ("colour = 1\n", "unknown keys"),
    ("[tasks\n", "not valid TOML"),
])
def test_a_bad_goat_toml_is_one_clear_error(tmp_path: Path, toml: str, match: str) -> None:
    (tmp_path / "goat.toml").write_text(toml)
    with pytest.raises(GoatError, match=match):
        read_set_info(tmp_path)


def test_unknown_task_names_list_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(GoatError, match="known tasks are hatefulness, misogyny"):
        choose_tasks(read_set_info(tmp_path), "misogyny,bullying")
