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
