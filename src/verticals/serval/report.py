"""`report.html` for people: the results table, the gate's reading, and PNG plots beside it."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import numpy as np

from verticals.files import write_text

_ALT = {"auc": "AUC of each model on the test rows, with 95% intervals, from 0, chance at 0.5",
        "roc": "ROC curves of each model on the test rows", "calibration": "calibration of the LLM's probabilities",
        "loops": "test AUC per loop, and label-free agreement per loop on its own axis"}
LABELS = {"llm_zero_shot": "LLM zero-shot", "small_model": "small model (SERSAL)", "tuned_llm": "reverse-tuned LLM",
          "oracle": "oracle (gold labels)"}


def table_rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(row, AUC, accuracy) as text, for the console and the report."""
    rows = []
    for key, label in LABELS.items():
        score = results["table"].get(key)
        if key == "tuned_llm" and score and results.get("tuned_llm_kept") is False:
            label += " (set aside)"  # tuning moved it away from the small model: not used
        rows.append((label, _with_ci(score, "auc"), _with_ci(score, "accuracy")))
    return rows


def _with_ci(score: dict[str, Any] | None, key: str) -> str:
    if not score:
        return "-"
    ci = score.get(f"{key}_ci")
    return f"{score[key]:.3f}" + (f" ({ci[0]:.2f}-{ci[1]:.2f})" if ci else "")


def verdict(results: dict[str, Any]) -> str:
    """The run in one plain sentence: did the small model beat its teacher, as far as the test rows can tell?"""
    teacher = results["loops"][0].get("teacher") if results.get("loops") else None
    table = results["table"]
    llm, small = table.get("llm_zero_shot"), table.get("small_model")
    said = ""
    if teacher and not teacher["ok"]:
        said = "The LLM says little about this table (the teacher check failed); "
    if not llm or not small:
        return said + "there are no gold labels, so nothing here says how good either model is."
    n = results["split"]["test"]
    if "auc_ci" in small and small["auc_ci"][0] > llm["auc"]:
        return said + (f"the small model beat its teacher (AUC {small['auc']:.3f} against {llm['auc']:.3f}, beyond "
                       f"its 95% interval on {n} test rows).")
    if small["auc"] > llm["auc"]:
        return said + (f"the small model scored above its teacher (AUC {small['auc']:.3f} against {llm['auc']:.3f}), "
                       f"but {n} test rows cannot tell them apart (95% interval {small['auc_ci'][0]:.2f}-"
                       f"{small['auc_ci'][1]:.2f}).") if "auc_ci" in small else said + "the small model scored higher."
    return said + (f"the small model did not beat its teacher (AUC {small['auc']:.3f} against {llm['auc']:.3f} on "
                   f"{n} test rows).")


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def write_report(folder: Path, results: dict[str, Any]) -> Path:
    """Write the plots and `report.html` into `folder` (beside `samples.jsonl`); return the report's path."""
    import matplotlib

    matplotlib.use("Agg")
    test = _test_probs(folder / "samples.jsonl")
    calibration_note = _one_bin(test.get("llm"))
    plots = [p for p in (_auc_plot(folder, results), _roc_plot(folder, test),
                         _calibration_plot(folder, test, calibration_note), _loops_plot(folder, results)) if p]
    recovery = results.get("oracle_recovery")
    cells = "".join(f"<tr><td>{html.escape(a)}</td><td>{b}</td><td>{c}</td></tr>" for a, b, c in table_rows(results))
    loops = "".join(
        f"<tr><td>{r['loop']}</td><td>{_auc(r['llm'])}</td><td>{_auc(r['small_model'])}</td>"
        f"<td>{_auc(r['tuned_llm'])}</td><td>{r['quality']['agreement']:.3f}</td>"
        f"<td>{_num(r['quality']['clean_fraction'])}</td><td>{_num(r['quality']['drift'])}</td>"
        f"<td>{'passed' if r['quality']['passed'] else 'failed'}: {html.escape(r['quality']['reason'])}</td>"
        f"<td>{r['tune_examples']}</td><td>{_tuning(r.get('tuning_check'))}</td>"
        f"<td>{r.get('unreadable', 0)}</td></tr>" for r in results["loops"])
    notes = "".join(f"<li>{html.escape(n)}</li>" for r in results["loops"] for n in r["notes"])
    teacher = results["loops"][0].get("teacher") if results["loops"] else None
    warning = (f'<p class="warning"><b>The LLM said little about this table</b>: {html.escape(teacher["reason"])}. '
               "The run went on because it was asked to (--force); a small model taught by this LLM can only copy "
               "it.</p>") if teacher and not teacher["ok"] else ""
    settings = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                       for k, v in sorted(results.get("config", {}).items()))
    # embedded, so the one HTML file stands alone when mailed or moved (the PNGs stay beside it too)
    images = "".join(f'<figure><img src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}" '
                     f'alt="{_ALT.get(p.stem, p.stem)}"></figure>' for p in plots)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>SERSAL: {html.escape(results['dataset'])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:.3em .7em;text-align:left}}
th{{background:#f3f3f3}}img{{max-width:100%}}figure{{display:inline-block;margin:.5em;width:46%}}
.muted{{color:#666}}.warning{{border-left:6px solid #8b0000;background:#fdecea;padding:.5em 1em}}
dt{{font-weight:bold;margin-top:.5em}}dd{{margin-left:1.5em}}</style></head><body>
<h1>SERSAL on {html.escape(results['title'])}</h1>
{warning}
<p class="verdict"><b>In short:</b> {html.escape(_capital(verdict(results)))}</p>
<p>{html.escape(results['question'])}<br><span class="muted">annotator: {html.escape(results.get('llm', ''))}
({html.escape(results['annotator'])});
{results['rows']} rows ({results['split']['train']} train, {results['split']['check']} check,
{results['split']['test']} test); gold labels are read by this evaluation only.</span></p>
{_imputed(results)}
<h2>Test rows</h2>
<table><tr><th>model</th><th>AUC (95% interval)</th><th>accuracy (95% interval)</th></tr>{cells}</table>
<p class="muted">Intervals: 1,000 bootstrap resamples of the {results['split']['test']} test rows. Where two
intervals overlap, these rows cannot tell the two models apart.</p>
<p>Oracle recovery (small-model AUC / oracle AUC): <b>{_num(recovery)}</b></p>
<h2>Loops</h2>
<table><tr><th>loop</th><th>LLM AUC</th><th>small AUC</th><th>tuned LLM AUC</th><th>agreement</th>
<th>clean fraction</th><th>drift</th><th>gate</th><th>tuning examples</th>
<th>tuned LLM vs small model, check rows (before)</th><th>rows without a readable answer (given 0.5)</th>
</tr>{loops}</table>
{f'<ul>{notes}</ul>' if notes else ''}
<h2>Plots</h2>
{f'<p class="warning">{html.escape(calibration_note)}</p>' if calibration_note else ''}
{images}
<h2>What the words mean</h2>
<dl>{''.join(f'<dt>{html.escape(term)}</dt><dd>{html.escape(meaning)}</dd>' for term, meaning in GLOSSARY)}</dl>
<h2>Settings</h2>
<table>{settings}</table>
</body></html>
"""
    file = folder / "report.html"
    write_text(file, page)
    return file


#: the report's own vocabulary, for a reader who has not read the paper
GLOSSARY = (
    ("AUC", "the chance that a random positive row is ranked above a random negative one: 0.5 is a coin, 1.0 "
            "is perfect. Computed on the test rows, which no model was trained on."),
    ("teacher check", "before anything is taught, whether the LLM's answers vary across rows and keep their "
                      "order when the records are worded differently; it reads no gold label. A teacher that is "
                      "consistently wrong passes it."),
    ("agreement", "how well the small model's ranking of the check rows matches the LLM's labels (an AUC against "
                  "the LLM's labels cut at their median). Label-free: it says the student learnt its teacher, "
                  "not that either is right."),
    ("clean fraction", "the share of training rows whose LLM label the small model's noisy-label learning "
                       "trusted."),
    ("drift", "how much the small model's probabilities moved since the previous loop (mean absolute change); "
              "a small drift ends the run."),
    ("gate", "the label-free decision whether a loop's small model is good enough to teach the LLM back: its "
             "agreement must beat chance on the check rows and must not fall from one loop to the next."),
    ("reverse tuning", "LoRA fine-tuning of the LLM on the rows the small model is most confident about; it is "
                       "set aside when the tuned LLM agrees with the small model measurably less than before."),
    ("oracle", "the same small model trained on the gold labels: the ceiling for what the table's features "
               "allow. Oracle recovery is the small model's AUC divided by the oracle's."),
    ("rows without a readable answer", "replies from which no probability could be read; they count as 0.5 and "
                                        "the run stops when they pass the stated share."),
)


def _imputed(results: dict[str, Any]) -> str:
    imputed = results.get("imputed") or {}
    if not imputed:
        return ""
    listed = ", ".join(f"{html.escape(column)} {n}" for column, n in imputed.items())
    return (f"<p>Imputed values (the LLM read \"not recorded\", the small model the column's median or a category of "
            f"its own): {listed}.</p>")


def _test_probs(samples: Path) -> dict[str, np.ndarray]:
    """Each model's P(positive) on the test rows, and their gold labels (`gold`), read from `samples.jsonl`."""
    import json

    rows = [json.loads(line) for line in samples.read_text().splitlines()] if samples.is_file() else []
    rows = [r for r in rows if r["split"] == "test" and r["gold"] is not None]
    if not rows:
        return {}
    return {key: np.array([r[key] for r in rows], dtype=float) for key in ("gold", *_SAMPLE_KEYS)
            if all(r.get(key) is not None for r in rows)}


_SAMPLE_KEYS = {"llm": "llm_zero_shot", "small_model": "small_model", "tuned_llm": "tuned_llm", "oracle": "oracle"}
_COLOURS = {"llm_zero_shot": "#888", "small_model": "#2a7", "tuned_llm": "#27a", "oracle": "#555"}


def _one_bin(probs: np.ndarray | None) -> str:
    """A sentence when the LLM's probabilities all fall in one tenth of [0, 1]: a calibration curve is one dot."""
    if probs is None or len(probs) == 0:
        return ""
    bins = np.unique(np.clip(np.floor(probs * 10), 0, 9))
    if len(bins) > 1:
        return ""
    return (f"Every one of the {len(probs)} test rows got an LLM probability between {probs.min():.3f} and "
            f"{probs.max():.3f}: the LLM's answers barely vary, so no calibration curve can be drawn, and the LLM "
            "ranks these rows by differences too small to mean much.")


def _tuning(check: dict[str, Any] | None) -> str:
    if not check:
        return "-"
    change = f", {(check['after'] - check['before']) / check['se']:+.1f} SE" if check.get("se") else ""
    return f"{check['after']:.3f} ({check['before']:.3f}{change}): {'kept' if check['kept'] else 'set aside'}"


def _auc(score: dict[str, float] | None) -> str:
    return f"{score['auc']:.3f}" if score else "-"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _auc_plot(folder: Path, results: dict[str, Any]) -> Path | None:
    import matplotlib.pyplot as plt

    present = [(key, v) for key, v in results["table"].items() if v]
    if not present:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.2))
    aucs = [v["auc"] for _, v in present]
    errors = np.array([[v["auc"] - v["auc_ci"][0], v["auc_ci"][1] - v["auc"]] if "auc_ci" in v else [0, 0]
                       for _, v in present]).T
    ax.barh([LABELS[k] for k, _ in present], aucs, xerr=errors, capsize=3,
            color=[_COLOURS[k] for k, _ in present], error_kw={"lw": 1})
    ax.axvline(0.5, color="#c33", lw=1, ls="--")
    ax.text(0.5, -0.6, " chance", color="#c33", fontsize=7, va="center")
    ax.set_xlim(0, 1)
    ax.set_xlabel("test AUC, with 95% interval")
    ax.invert_yaxis()
    fig.tight_layout()
    return _save(fig, folder / "auc.png")


def _roc_plot(folder: Path, test: dict[str, np.ndarray]) -> Path | None:
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    gold = test.get("gold")
    if gold is None or len(np.unique(gold)) < 2:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot([0, 1], [0, 1], color="#c33", ls="--", lw=1, label="chance")
    for sample, key in _SAMPLE_KEYS.items():
        if sample in test:
            fpr, tpr, _ = roc_curve(gold, test[sample])
            ax.plot(fpr, tpr, color=_COLOURS[key], lw=1.5, label=LABELS[key],
                    ls=":" if key == "oracle" else "-")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (sensitivity)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("ROC curves on the test rows", fontsize=9)
    fig.tight_layout()
    return _save(fig, folder / "roc.png")


def _calibration_plot(folder: Path, test: dict[str, np.ndarray], one_bin: str) -> Path | None:
    import matplotlib.pyplot as plt

    probs, gold = test.get("llm"), test.get("gold")
    if probs is None or gold is None:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([0, 1], [0, 1], color="#aaa", ls="--", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("LLM soft label P(positive)")
    ax.set_ylabel("share positive (gold)")
    ax.set_title("calibration of the LLM's labels (test rows)", fontsize=9)
    if one_bin:  # one dot would look like a finding: say what happened instead
        ax.text(0.5, 0.5, f"all {len(probs)} rows between\n{probs.min():.3f} and {probs.max():.3f}:\nno curve to draw",
                ha="center", va="center", fontsize=9, color="#8b0000")
        ax.axvspan(probs.min(), max(probs.max(), probs.min() + 0.004), color="#8b0000", alpha=0.3)
    else:
        edges = np.linspace(0, 1, 11)
        which = np.clip(np.digitize(probs, edges) - 1, 0, 9)
        used = [b for b in range(10) if (which == b).any()]
        ax.plot([probs[which == b].mean() for b in used], [gold[which == b].mean() for b in used], "o-", color="#27a")
        for b in used:
            ax.annotate(str(int((which == b).sum())), (probs[which == b].mean(), gold[which == b].mean()), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    fig.tight_layout()
    return _save(fig, folder / "calibration.png")


def _loops_plot(folder: Path, results: dict[str, Any]) -> Path | None:
    import matplotlib.pyplot as plt

    loops = results["loops"]
    if not any(r["llm"] for r in loops):
        return None
    fig, (scores, agree) = plt.subplots(1, 2, figsize=(6.4, 3.2))
    x = [r["loop"] for r in loops]
    for key, label, marker in (("llm", "LLM", "o-"), ("small_model", "small model", "s-"),
                               ("tuned_llm", "tuned LLM", "d-")):
        values = [r[key]["auc"] if r.get(key) else np.nan for r in loops]
        if not np.isnan(values).all():
            scores.plot(x, values, marker, label=label)
    scores.axhline(0.5, color="#c33", lw=1, ls="--")
    scores.set_ylim(0, 1)
    scores.set_ylabel("test AUC (gold labels)")
    scores.legend(fontsize=7)
    agree.plot(x, [r["quality"]["agreement"] for r in loops], "^--", color="#a52")
    agree.axhline(0.5, color="#c33", lw=1, ls="--")
    agree.set_ylim(0, 1)
    agree.set_ylabel("agreement (label-free)")
    for ax in (scores, agree):
        ax.set_xticks(x)
        ax.set_xlabel("loop")
    fig.tight_layout()
    return _save(fig, folder / "loops.png")


def _save(fig: Any, file: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(file, dpi=110)
    plt.close(fig)
    return file
