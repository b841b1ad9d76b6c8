"""`report.html` of a patient evaluation: the headline figures against their targets, per-theme
accuracy as bars, the confusion matrix as a picture, and the answers whose checks fired. One
self-contained page (pictures as data: URIs, no script), every text escaped."""

from __future__ import annotations

import base64
import io
import json
from html import escape
from pathlib import Path
from types import ModuleType
from typing import Any

from verticals.files import write_text

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
#: (key, label, target, how to show it)
_HEADLINE = [
    ("theme_accuracy", "theme accuracy", ">= 0.85", "{:.3f}"),
    ("grounding", "answer sentences supported by a cited report sentence (proxy: quality)", "", "{:.3f}"),
    ("hallucinated_findings", "answers stating a finding the report lacks or negates", "0", "{}"),
    ("referral_compliance", "referral where the policy requires it (proxy: relation)", "100%", "{:.1%}"),
    ("urgent_first", "urgent notice first where required", "100%", "{:.1%}"),
    ("median_grade", "median reading grade, Flesch-Kincaid (proxy: manner)", "<= 8", "{:.1f}"),
    ("median_words", "median answer length in words (proxy: quantity)", "", "{:.0f}"),
    ("answers_from_model", "answers given by the model (the rest by the template)", "", "{}"),
]


def write_report(out: Path, results: dict[str, Any]) -> None:
    """Write `report.html` into `out`."""
    rows = "".join(f"<tr><td>{escape(label)}</td><td>{_show(results.get(key), shape)}</td>"
                   f"<td>{escape(target)}</td></tr>" for key, label, target, shape in _HEADLINE)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text("utf-8").splitlines() if line]
    fired = [s for s in samples if s["checks"]][:20]
    caught = "".join(f"<li><b>{escape(s['question'])}</b> ({escape(s['report'])}): {escape(', '.join(s['checks']))}"
                     "</li>" for s in fired)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="{_CSP}">
<title>Patient assistant evaluation</title>
<style>body{{font:15px/1.45 system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.25em .6em}}img{{max-width:100%}}</style>
</head><body><h1>Patient assistant evaluation</h1>
<p>Model <code>{escape(str(results['settings']['model']))}</code>; {results['questions']} held-out questions asked
about {results['reports']} bundled reports in turn. {escape(results['proxies'])}.</p>
<table><tr><th>measure</th><th>value</th><th>target</th></tr>{rows}</table>
{_gricean(results)}
<h2>Accuracy per theme</h2>{_image(_bars(results))}
<h2>Confusion matrix (rows: the question's theme; columns: the theme it was answered as)</h2>{_image(_matrix(results))}
<h2>Drafts the check stopped ({sum(1 for s in samples if s['checks'])} answers; first 20)</h2><ul>{caught}</ul>
<p>Every answer: <code>samples.jsonl</code>; every number: <code>results.json</code>.</p>
</body></html>
"""
    write_text(out / "report.html", page)


def _gricean(results: dict[str, Any]) -> str:
    """The judge's ratings per maxim, when a judge rated the answers."""
    rated = results.get("gricean")
    if not rated:
        return ""
    rows = "".join(f"<tr><td>{escape(maxim)}</td><td>{_show(r['mean'], '{:.2f}')}</td><td>{r['rated']}</td>"
                   f"<td>{r['unreadable']}</td></tr>" for maxim, r in rated.items())
    return (f"<h2>Gricean maxims rated by <code>{escape(str(results['settings'].get('judge')))}</code> (1-5)</h2>"
            f"<table><tr><th>maxim</th><th>mean</th><th>answers rated</th><th>replies without a rating</th></tr>"
            f"{rows}</table>")


def _show(value: Any, shape: str) -> str:
    return "-" if value is None else escape(shape.format(value))


def _image(png: bytes) -> str:
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _figure() -> ModuleType:  # matplotlib.pyplot, imported on first use
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100)
    _figure().close(figure)
    return buffer.getvalue()


def _bars(results: dict[str, Any]) -> bytes:
    plt = _figure()
    names = list(results["per_theme_accuracy"])
    values = [results["per_theme_accuracy"][n] or 0.0 for n in names]
    figure, axes = plt.subplots(figsize=(9, 3.4))
    axes.bar(names, values, color="#4c72b0")
    axes.axhline(0.85, color="#dd8452", linestyle="--", label="target 0.85")
    axes.set_ylim(0, 1)
    axes.set_ylabel("accuracy")
    axes.tick_params(axis="x", rotation=35)
    axes.legend(loc="lower right")
    return _png(figure)


def _matrix(results: dict[str, Any]) -> bytes:
    plt = _figure()
    names, counts = results["confusion"]["themes"], results["confusion"]["counts"]
    figure, axes = plt.subplots(figsize=(7.5, 6.5))
    axes.imshow(counts, cmap="Blues")
    axes.set_xticks(range(len(names)), names, rotation=60, ha="right")
    axes.set_yticks(range(len(names)), names)
    darkest = max(map(max, counts))
    for i, row in enumerate(counts):
        for j, n in enumerate(row):
            if n:
                axes.text(j, i, str(n), ha="center", va="center", color="white" if n > darkest / 2 else "black")
    return _png(figure)
