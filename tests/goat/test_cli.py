"""`verticals goat` as a stranger uses it: a fixture, a run, and one plain line for every mistake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_cli import run_cli


def test_fixture_then_eval_of_replayed_answers(tmp_path: Path) -> None:
    made = run_cli("goat", "fixture", str(tmp_path / "memes"), "--train", "4", "--test", "4", tmp_path=tmp_path)
    assert made.returncode == 0 and "wrote 40 memes in 5 tasks" in made.stderr
    rows = [json.loads(line) for line in (tmp_path / "memes" / "sarcasm" / "test.jsonl").read_text().splitlines()]
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"task": "sarcasm", "id": r["id"], "answer": "Yes"}) + "\n" for r in rows))
    result = run_cli("goat", "eval", "--data", str(tmp_path / "memes"), "--model", f"replay:{answers}", "--out",
                     str(tmp_path / "run"), "--tasks", "sarcasm", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "fixture (synthetic, not GOAT-Bench)" in result.stdout and "sarcasm" in result.stdout
    assert json.loads((tmp_path / "run" / "results.json").read_text())["tasks"]["sarcasm"]["n"] == 4


@pytest.mark.parametrize(("args", "message"), [
    (["eval", "--data", "{tmp}/none", "--model", "ocr+bundled", "--out", "{tmp}/r"], "no meme set at"),
    (["eval", "--data", "{tmp}/empty", "--model", "ocr+bundled", "--out", "{tmp}/r"], "has no task folder"),
    (["eval", "--data", "{tmp}/memes", "--model", "bundled", "--out", "{tmp}/r"], "unknown model 'bundled'"),
    (["eval", "--data", "{tmp}/memes", "--model", "replay:{tmp}/no.jsonl", "--out", "{tmp}/r"],
     "replay file not found"),
    (["eval", "--data", "{tmp}/memes", "--model", "ocr+bundled", "--out", "{tmp}/r", "--prompt", "best"],
     "unknown prompt style"),
    (["eval", "--data", "{tmp}/memes", "--model", "ocr+bundled", "--out", "{tmp}/r", "--limit", "-1"],
     "limit must be 0"),
    (["eval", "--data", "{tmp}/memes", "--model", "replay:{tmp}/empty.jsonl", "--out", "{tmp}/r"],
     "holds no answers"),
    (["fixture", "{tmp}/memes"], "not an empty folder"),
])
def test_mistakes_end_in_one_plain_line_and_exit_2(tmp_path: Path, fixture_set: Path, args: list[str],
                                                   message: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "memes").symlink_to(fixture_set)
    result = run_cli("goat", *[a.replace("{tmp}", str(tmp_path)) for a in args], tmp_path=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
