"""The command line: help with examples everywhere, results as tables, user errors as one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from verticals.cli import app

runner = CliRunner()


def _commands(group, prefix=()):  # type: ignore[no-untyped-def]
    for name, command in getattr(group, "commands", {}).items():
        yield (*prefix, name)
        yield from _commands(command, (*prefix, name))


@pytest.mark.parametrize("path", [(), *_commands(get_command(app))])
def test_every_help_shows_an_example(path: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Example" in result.output


def run_cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VERTICALS_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "verticals", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_probs_prints_a_table_and_caches(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = run_cli("llm", "probs", "-m", str(tiny_model_dir), "--choices", "Yes,No",
                     "Is fever a symptom?", "Is water wet?", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if "Is fever" in line or "Is water" in line]
    assert len(rows) == 2
    for row in rows:
        yes, no = (float(cell) for cell in row.strip("│ ").split("│")[1:3])
        assert yes + no == pytest.approx(1, abs=2e-3)
    assert (tmp_path / "cache" / "responses.sqlite").is_file()


def test_chat_streams_a_reply(tiny_model_dir: Path, tmp_path: Path) -> None:
    result = run_cli("llm", "chat", "-m", str(tiny_model_dir), "--max-tokens", "5", "Hello", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


@pytest.mark.parametrize(("args", "message"), [
    (["llm", "chat", "-m", "/no/such/model", "hi"], "no model at /no/such/model"),
    (["llm", "probs", "--choices", "Yes", "Is it?"], "at least two choices"),
    (["llm", "probs", "--choices", "Yes,No"], "no questions given"),
    (["llm", "probs", "--file", "/no/such/file.txt"], "question file not found"),
    (["llm", "chat", "-m", "http://127.0.0.1:9/v1", "hi"], "cannot reach"),
    (["finetune", "run", "/no/such/data.jsonl", "--out", "/tmp/unused"], "training data not found"),
    (["finetune", "run", "/dev/null", "--out", "/tmp/unused", "--drop-rate", "0.95"], "`drop_rate`"),
    (["finetune", "run", "/dev/null", "--out", "/tmp/unused", "--drop-rate", "fast"], "or auto, got 'fast'"),
    (["finetune", "check-dropbp", "/dev/null", "--rates", "0.5,x"], "--rates should be numbers"),
    (["finetune", "check-dropbp", "/dev/null", "--rates", "1.5"], "--rates should be drop rates in [0, 1)"),
    (["finetune", "check-dropbp", "/no/such/data.jsonl"], "training data not found"),
    (["finetune", "check-dropbp", "/dev/null", "--masks", "-1"], "--masks at least 0"),
    (["serval", "run", "no_such_table", "--out", "/tmp/unused"], "unknown dataset 'no_such_table'"),
    (["serval", "run", "/no/such.csv", "--out", "/tmp/unused"], "no metadata for /no/such.csv"),
    (["serval", "run", "heart_failure", "--out", "/tmp/unused", "--llm", "simulated:auc=2"], "auc should be"),
    (["serval", "run", "heart_failure", "--out", "/tmp/unused", "--loops", "0"], "`loops`"),
    (["serval", "run", "heart_failure", "--out", "/tmp/unused", "--drop-rate", "half"], "or auto, got 'half'"),
])
def test_user_errors_are_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    result = run_cli(*args, tmp_path=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_finetune_then_chat_with_the_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "chats.jsonl"
    chat = {"messages": [{"role": "user", "content": "Is fever a symptom?"}, {"role": "assistant", "content": "Yes."}]}
    data.write_text((json.dumps(chat) + "\n") * 8)
    out = tmp_path / "tuned"
    result = run_cli("finetune", "run", str(data), "--out", str(out), "-m", str(tiny_model_dir), "--steps", "2",
                     "--batch-size", "2", "--drop-rate", "0.5", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--adapter" in result.stderr and (out / "adapter_model.safetensors").is_file()
    again = run_cli("finetune", "run", str(data), "--out", str(out), "-m", str(tiny_model_dir), "--steps", "2",
                    tmp_path=tmp_path)
    assert again.returncode == 2 and "--resume" in again.stderr
    reply = run_cli("llm", "chat", "-m", str(tiny_model_dir), "--adapter", str(out), "--max-tokens", "3", "Hi",
                    tmp_path=tmp_path)
    assert reply.returncode == 0, reply.stderr


def test_check_dropbp_prints_the_fidelity_table_and_the_rate_auto_would_choose(tiny_model_dir: Path,
                                                                             tmp_path: Path) -> None:
    data = tmp_path / "chats.jsonl"
    chats = [{"messages": [{"role": "user", "content": f"Is fever number {i} a symptom?"},
                           {"role": "assistant", "content": "Yes." if i % 2 else "No."}]} for i in range(8)]
    data.write_text("".join(json.dumps(c) + "\n" for c in chats))
    result = run_cli("finetune", "check-dropbp", str(data), "-m", str(tiny_model_dir), "--batches", "2", "--masks",
                     "1", "--rates", "0.25,0.5", "--batch-size", "2", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["drop", "rate", "cos"] and lines[1].split()[0] == "0.250"
    assert lines[3].startswith("auto: ")
    assert "2 batches with 1 masks per rate: 10 forward and backward passes" in lines[4]


def test_serval_lists_datasets_and_runs_a_study(tmp_path: Path) -> None:
    listed = run_cli("serval", "datasets", tmp_path=tmp_path)
    assert listed.returncode == 0 and "heart_disease" in listed.stdout and "pima_diabetes" in listed.stdout
    out = tmp_path / "study"
    args = ("serval", "run", "heart_failure", "--llm", "simulated:auc=0.7", "--out", str(out), "--seed", "1")
    result = run_cli(*args, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "small model (SERSAL)" in result.stdout and "oracle recovery" in result.stdout
    assert (out / "report.html").is_file()
    again = run_cli(*args, tmp_path=tmp_path)  # finished: read back, same table
    assert again.returncode == 0 and again.stdout == result.stdout
    other = run_cli(*args[:-1], "2", tmp_path=tmp_path)
    assert other.returncode == 2 and "other settings" in other.stderr
