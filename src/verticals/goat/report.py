"""What a person reads after a run, written into the run folder from `results` (what `results.json` holds):

- `report.md`: the per-task table of the paper's scores, beside `macro_f1.png`, a bar chart of macro-F1 per
  task with its 95% interval;
- `report.html`: one self-contained page with the same table and chart, and per task the confusion matrix and
  a gallery of the memes the model got wrong (unknown answers count as wrong, as in the scores): thumbnail,
  caption, raw answer, how it was read, gold and predicted label.

The page loads nothing (the chart and thumbnails are data: URIs) and runs nothing: captions and answers may hold
markup, so every text from the data or a model is escaped, and a Content-Security-Policy forbids scripts.
"""

from __future__ import annotations

import base64
import io
import json
from contextlib import suppress
from html import escape
from pathlib import Path
from typing import Any

from verticals.files import write_text
from verticals.goat.config import GoatError
from verticals.goat.data import read_records
from verticals.goat.tasks import paper_tasks, read_set_info

#: misclassified memes shown per task; the rest are in `samples_<task>.jsonl`
GALLERY_SIZE = 24
#: longest side of a thumbnail, in pixels
THUMBNAIL_PX = 160
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
_COLUMNS = ("task", "memes", "macro-F1", "95% interval", "accuracy", "recall (abusive)", "unknown", "AUROC",
            "skipped")
_ABUSIVE = ("not abusive", "abusive")  # words for labels 0 and 1 of a task the report cannot look up
_STYLE = """body{font:15px/1.45 system-ui,sans-serif;margin:2em auto;max-width:72em;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}.fixture{background:#fff3cd;border:2px solid #d39e00;padding:.8em}
.gallery{display:flex;flex-wrap:wrap;gap:1em}.meme{width:20em;margin:0;border:1px solid #ddd;padding:.6em}
.meme img,.no-image{display:block;max-width:160px;max-height:160px}.no-image{width:160px;height:90px;
background:#eee;color:#666;text-align:center;line-height:90px}dt{font-weight:bold}dd{margin:0 0 .3em;
white-space:pre-wrap;overflow-wrap:anywhere}"""


def write_report(out: Path, results: dict[str, Any]) -> None:
    """Write `report.md`, `macro_f1.png` and `report.html` into the run folder `out` from `results`."""
    _chart(out / "macro_f1.png", results)
    write_text(out / "report.md", _markdown(results))
    write_text(out / "report.html", _html(out, results))


def _rows(results: dict[str, Any]) -> list[tuple[str, ...]]:
    """The per-task table's cells, shared by both reports so they never disagree."""
    rows: list[tuple[str, ...]] = []
    for name, task in results["tasks"].items():
        low, high = task["macro_f1_ci95"]
        auroc = task.get("auroc")
        rows.append((name, str(task["n"]), f"{task['macro_f1']:.3f}", f"{low:.3f}-{high:.3f}",
                     f"{task['accuracy']:.3f}", f"{task['recall']['1']:.3f}", f"{task['unknown_rate']:.1%}",
                     "-" if auroc is None else f"{auroc:.3f}", str(sum(task["loading"]["skipped"].values()))))
    return rows


def _markdown(results: dict[str, Any]) -> str:
    lines = [f"# {results['model']['spec']} on {results['benchmark']}", ""]
    if results["fixture"]:
        lines += ["> **Fixture**: a synthetic meme set made by `verticals goat fixture` for tests and demos. "
                  "These figures say nothing about GOAT-Bench.", ""]
    overall = results["overall"]
    lines += [f"Prompt `{results['prompt']['style']}` ({results['prompt']['fingerprint']}), "
              f"{overall['memes']} memes in {overall['tasks']} tasks. Mean macro-F1 over tasks "
              f"**{overall['macro_f1']:.3f}**, accuracy {overall['accuracy']:.3f}, "
              f"{overall['unknown']} answers not readable as Yes or No (scored as wrong).", "",
              "![macro-F1 per task](macro_f1.png)", "",
              "| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in _rows(results)]
    skipped_notes = [f"- {name}: {', '.join(f'{n} {k}' for k, n in t['loading']['skipped'].items())} "
                     f"(first: `{t['loading']['examples'][0]}`)"
                     for name, t in results["tasks"].items() if t["loading"]["skipped"]]
    if skipped_notes:
        lines += ["", "Records skipped while loading:", *skipped_notes]
    if results.get("tasks_left_out"):
        lines += ["", "Tasks left out:", *(f"- {name}: {why}" for name, why in results["tasks_left_out"].items())]
    lines += ["", "Per-meme prompts, answers and readings: `samples_<task>.jsonl`; every number: `results.json`; "
              "confusion matrices and the misclassified memes: `report.html`.", ""]
    return "\n".join(lines)


def _html(out: Path, results: dict[str, Any]) -> str:
    """The whole page; every value from `results` or a samples file goes through `escape`."""
    title = escape(f"{results['model']['spec']} on {results['benchmark']}")
    overall, prompt = results["overall"], results["prompt"]
    parts = ['<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
             f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
             f"<title>{title}</title><style>{_STYLE}</style></head><body>", f"<h1>{title}</h1>"]
    if results["fixture"]:
        parts.append('<p class="fixture"><strong>Fixture figures, not GOAT-Bench.</strong> A synthetic meme set '
                     "made by <code>verticals goat fixture</code> for tests and demos: these figures say nothing "
                     "about GOAT-Bench.</p>")
    parts += [f"<p>Model <code>{escape(results['model']['spec'])}</code>, benchmark "
              f"<b>{escape(str(results['benchmark']))}</b>, prompt <code>{escape(prompt['style'])}</code> "
              f"({escape(prompt['fingerprint'])}). {overall['memes']} memes in {overall['tasks']} tasks; mean "
              f"macro-F1 over tasks <b>{overall['macro_f1']:.3f}</b>, accuracy {overall['accuracy']:.3f}, "
              f"{overall['unknown']} answers not readable as Yes or No (scored as wrong).{_judge_note(results)}</p>",
              _chart_html(out / "macro_f1.png"), _table_html(results)]
    if results.get("tasks_left_out"):
        parts.append("<p>Tasks left out:</p><ul>" + "".join(
            f"<li>{escape(name)}: {escape(why)}</li>" for name, why in results["tasks_left_out"].items()) + "</ul>")
    words = _label_words(results)
    template = str(prompt.get("template", ""))
    for name, task in results["tasks"].items():
        parts.append(_task_html(out, name, task, words.get(name, _ABUSIVE), template))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _judge_note(results: dict[str, Any]) -> str:
    """Who re-read the unreadable answers, when a judge model did (its verdicts show per meme)."""
    judge = results.get("judge")
    return f" Unreadable answers re-read by <code>{escape(str(judge['spec']))}</code>." if judge else ""


def _chart_html(file: Path) -> str:
    """The chart `_chart` drew, embedded so the page needs no other file."""
    data = base64.b64encode(file.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="macro-F1 per task with 95% intervals">'


def _table_html(results: dict[str, Any]) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in _COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in _rows(results))
    return f"<table><tr>{head}</tr>{body}</table>"


def _label_words(results: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """What labels 0 and 1 mean per task: the paper's, and those the run's meme set declares."""
    tasks = paper_tasks()
    data = Path(str(results.get("settings", {}).get("data", "")))
    if str(data) and data.is_dir():
        with suppress(GoatError):  # goat.toml changed since the run read it: its own tasks say "abusive"
            tasks = read_set_info(data).tasks
    return {name: task.labels for name, task in tasks.items()}


def _task_html(out: Path, name: str, task: dict[str, Any], words: tuple[str, str], template: str) -> str:
    """One task's confusion matrix and gallery of misclassified memes."""
    samples = out / f"samples_{name}.jsonl"
    parts = [f'<section class="task" data-task="{escape(name)}"><h2>{escape(name)}</h2>',
             _confusion_html(task, words)]
    if not samples.is_file():
        return "\n".join([*parts, f"<p>No {escape(samples.name)} in the run folder.</p></section>"])
    rows = [row for _, row in read_records(samples) if isinstance(row, dict)]
    misses = [row for row in rows if row.get("prediction") != row.get("gold")]
    parts.append(f"<h3>Misclassified: {len(misses)} of {len(rows)}</h3>")
    parts.append('<div class="gallery">' + "".join(_meme_html(r, words, template) for r in misses[:GALLERY_SIZE])
                 + "</div>")
    if len(misses) > GALLERY_SIZE:
        parts.append(f"<p>{len(misses) - GALLERY_SIZE} more in {escape(samples.name)}</p>")
    return "\n".join([*parts, "</section>"])


def _confusion_html(task: dict[str, Any], words: tuple[str, str]) -> str:
    """Gold labels down, predictions across, with unknown answers as a column of their own."""
    counts = task["confusion"]["counts"]
    head = "".join(f"<th>predicted {escape(w)}</th>" for w in words) + "<th>unknown</th>"
    body = "".join(f"<tr><th>gold {escape(word)}</th>" + "".join(f"<td>{int(n)}</td>" for n in row) + "</tr>"
                   for word, row in zip(words, counts))
    return f'<table class="confusion"><tr><th></th>{head}</tr>{body}</table>'


def _meme_html(row: dict[str, Any], words: tuple[str, str], template: str) -> str:
    """One misclassified meme: thumbnail, then what was asked, answered, read and expected."""
    def word(label: Any) -> str:
        return words[int(label)] if label in (0, 1) else "unknown (not read as Yes or No)"

    answer = row.get("answer")
    fields = [("caption", _caption(str(row.get("prompt", "")), template)),
              ("answer", "(no answer)" if answer is None else str(answer)), ("read as", str(row.get("rule"))),
              ("gold", word(row.get("gold"))), ("predicted", word(row.get("prediction")))]
    if "judge" in row:
        judge = row["judge"]
        fields.append(("judge", judge if isinstance(judge, str) else json.dumps(judge, ensure_ascii=False)))
    listed = "".join(f"<dt>{escape(key)}</dt><dd>{escape(value)}</dd>" for key, value in fields)
    ident = escape(str(row.get("id")))
    return (f'<figure class="meme" data-meme="{ident}">{_picture(row.get("image"))}'
            f"<figcaption><code>{ident}</code><dl>{listed}</dl></figcaption></figure>")


def _caption(prompt: str, template: str) -> str:
    """The meme's text, cut out of the prompt around the template's `{text}`; the whole prompt if it does not fit."""
    before, found, after = template.partition("{text}")
    after = after.split("{", 1)[0]  # up to the next placeholder
    if not found or "{" in before or not prompt.startswith(before):
        return prompt
    end = prompt.rfind(after) if after else len(prompt)
    return prompt[len(before):end] if end >= len(before) else prompt


def _picture(image: Any) -> str:
    """A thumbnail, or a plain box saying why there is none (a report never fails for want of an image)."""
    if not image:
        why = "no image"
    elif not Path(str(image)).is_file():
        why = "image not found"
    elif (uri := _thumbnail(Path(str(image)))) is None:
        why = "image not readable"
    else:
        return f'<img src="{uri}" alt="meme">'
    return f'<div class="no-image">{why}</div>'


def _thumbnail(file: Path) -> str | None:
    """A JPEG data URI at most `THUMBNAIL_PX` on the long side, or None when the file does not decode."""
    from PIL import Image, UnidentifiedImageError

    buffer = io.BytesIO()
    try:
        with Image.open(file) as picture:
            picture.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            picture.convert("RGB").save(buffer, "JPEG", quality=80)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _chart(file: Path, results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["tasks"])
    values = [results["tasks"][n]["macro_f1"] for n in names]
    lows = [v - results["tasks"][n]["macro_f1_ci95"][0] for n, v in zip(names, values)]
    highs = [results["tasks"][n]["macro_f1_ci95"][1] - v for n, v in zip(names, values)]
    figure, axes = plt.subplots(figsize=(1.4 * len(names) + 2, 3.6))
    axes.bar(names, values, yerr=[lows, highs], capsize=4, color="#4c72b0")
    axes.set_ylim(0, 1)
    axes.set_ylabel("macro-F1 (95% interval)")
    title = f"{results['model']['spec']}, {results['prompt']['style']}"
    axes.set_title(title + (" (fixture)" if results["fixture"] else ""), parse_math=False)  # a spec may hold "$"
    axes.axhline(results["overall"]["macro_f1"], color="#dd8452", linestyle="--", label="mean over tasks")
    axes.legend(loc="upper right")
    figure.tight_layout()
    figure.savefig(file, dpi=110)
    plt.close(figure)
