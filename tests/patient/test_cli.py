"""`verticals patient explain` as a stranger uses it: the report marked up, and one plain line for
every file that holds no report."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli import run_cli


def test_explain_marks_the_findings_and_defines_the_terms(tmp_path: Path) -> None:
    report = tmp_path / "report.txt"
    report.write_text("FINDINGS: Stable 4 mm nodule in the right upper lobe. No pleural effusion.\n"
                      "<script>alert(1)</script> [bold]Possible[/bold] small pneumothorax.\n")
    result = run_cli("patient", "explain", str(report), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "the report says this is there (right; right upper lobe; 4 mm; stable)" in out
    assert "pleural effusion (fluid around the lung): the report says this is not there" in out
    assert "collapsed lung): the report says this may be there" in out
    assert "<script>alert(1)</script> [bold]Possible[/bold] small pneumothorax." in out  # the text as it is
    assert "? right upper lobe: The top section of the right lung" in out
    assert "not a diagnosis" in out


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.txt", None, "report not found"),
    ("empty.txt", "  \n", "the report is empty"),
    ("binary.txt", b"\xff\xfe\x00\x81", "not a text file"),
])
def test_files_without_a_report_end_in_one_plain_line(tmp_path: Path, name: str, content: str | bytes | None,
                                                      message: str) -> None:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_bytes(content)
    result = run_cli("patient", "explain", str(path), tmp_path=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [f"error: {result.stderr.strip().removeprefix('error: ')}"]
    assert message in result.stderr


def test_ask_answers_from_the_report_with_its_notices(tmp_path: Path) -> None:
    report = tmp_path / "report.txt"
    report.write_text("FINDINGS: A 4 mm nodule in the right upper lobe (series 3, image 45).\n"
                      "Large right pneumothorax.\n")
    result = run_cli("patient", "ask", str(report), "Where is the nodule?", "--model", "none", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert out.startswith("Your report mentions pneumothorax, which can need prompt care")  # urgent first
    assert "right upper lobe" in out and "series 3, image 45" in out and "do not look at the images" in out
    assert "not a diagnosis" in out and "Loading weights" not in result.stderr
    as_json = run_cli("patient", "ask", str(report), "Where is the nodule?", "--model", "none", "--json",
                      tmp_path=tmp_path)
    import json

    data = json.loads(as_json.stdout)
    assert data["theme"] == "location" and data["notices"][0]["kind"] == "urgent_report" and data["citations"]


@pytest.mark.parametrize(("question", "message"), [("", "the question is empty"), ("x" * 2001, "2,001 characters")])
def test_ask_refuses_a_question_it_cannot_use_in_one_line(tmp_path: Path, question: str, message: str) -> None:
    report = tmp_path / "report.txt"
    report.write_text("FINDINGS: Clear lungs.\n")
    result = run_cli("patient", "ask", str(report), question, "--model", "none", tmp_path=tmp_path)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_serve_refuses_bad_settings_in_one_line_before_loading_a_model(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        cases = [(("--port", port), f"cannot listen on 127.0.0.1:{port}"),
                 (("--port", "70000"), "port must be between 0 and 65535"),
                 (("--model-wait", "0"), "model_wait (--model-wait) must be above 0 s"),
                 (("--model-slots", "-1"), "model_slots (--model-slots) must be at least 1"),
                 (("--model", str(tmp_path / "no-such-model"), "--port", "0"), "no-such-model")]
        for args, message in cases:
            result = run_cli("patient", "serve", "--model", "none", *args, tmp_path=tmp_path)
            assert result.returncode == 2, (args, result.stderr)
            assert result.stderr.startswith("error: ") and message in result.stderr, (args, result.stderr)
            assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) <= 2
