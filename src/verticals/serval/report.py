"""`report.html` for people: the results table, the gate's reading, and PNG plots beside it."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

import numpy as np

from verticals.files import write_text

_ALT = {"auc": "AUC of each model on the test rows", "calibration": "calibration of the LLM's probabilities",
        "loops": "AUC and agreement per loop"}
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


def write_report(folder: Path, results: dict[str, Any], llm_probs: np.ndarray | None, gold: np.ndarray | None) -> Path:
    """Write the plots and `report.html` into `folder`; return the report's path."""
    import matplotlib

    matplotlib.use("Agg")
    plots = [p for p in (_auc_plot(folder, results), _calibration_plot(folder, llm_probs, gold),
                         _loops_plot(folder, results)) if p]
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
.muted{{color:#666}}.warning{{border-left:6px solid #8b0000;background:#fdecea;padding:.5em 1em}}</style></head><body>
<h1>SERSAL on {html.escape(results['title'])}</h1>
{warning}
<p class="verdict"><b>In short:</b> {html.escape(_capital(verdict(results)))}</p>
<p>{html.escape(results['question'])}<br><span class="muted">annotator: {html.escape(results.get('llm', ''))}
({html.escape(results['annotator'])});
{results['rows']} rows ({results['split']['train']} train, {results['split']['check']} check,
{results['split']['test']} test); gold labels are read by this evaluation only.</span></p>
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
<h2>Plots</h2>{images}
<h2>Settings</h2>
<table>{settings}</table>
</body></html>
"""
    file = folder / "report.html"
    write_text(file, page)
    return file


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

    present = [(LABELS[k], v["auc"]) for k, v in results["table"].items() if v]
    if not present:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.barh([p[0] for p in present], [p[1] for p in present], color=["#888", "#2a7", "#27a", "#555"][:len(present)])
    ax.axvline(0.5, color="#c33", lw=1, ls="--")
    ax.set_xlim(0.3, 1.0)
    ax.set_xlabel("test AUC")
    ax.invert_yaxis()
    fig.tight_layout()
    return _save(fig, folder / "auc.png")


def _calibration_plot(folder: Path, probs: np.ndarray | None, gold: np.ndarray | None) -> Path | None:
    import matplotlib.pyplot as plt

    if probs is None or gold is None:
        return None
    edges = np.linspace(0, 1, 11)
    which = np.clip(np.digitize(probs, edges) - 1, 0, 9)
    used = [b for b in range(10) if (which == b).any()]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([0, 1], [0, 1], color="#aaa", ls="--", lw=1)
    ax.plot([probs[which == b].mean() for b in used], [gold[which == b].mean() for b in used], "o-", color="#27a")
    for b in used:
        ax.annotate(str(int((which == b).sum())), (probs[which == b].mean(), gold[which == b].mean()), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("LLM soft label P(positive)")
    ax.set_ylabel("share positive (gold)")
    ax.set_title("calibration of the LLM's labels (test rows)", fontsize=9)
    fig.tight_layout()
    return _save(fig, folder / "calibration.png")


def _loops_plot(folder: Path, results: dict[str, Any]) -> Path | None:
    import matplotlib.pyplot as plt

    loops = results["loops"]
    if not any(r["llm"] for r in loops):
        return None
    fig, ax = plt.subplots(figsize=(5, 3.2))
    x = [r["loop"] for r in loops]
    ax.plot(x, [r["llm"]["auc"] if r["llm"] else np.nan for r in loops], "o-", label="LLM")
    ax.plot(x, [r["small_model"]["auc"] if r["small_model"] else np.nan for r in loops], "s-", label="small model")
    ax.plot(x, [r["quality"]["agreement"] for r in loops], "^--", label="agreement (label-free)")
    ax.set_xticks(x)
    ax.set_xlabel("loop")
    ax.set_ylabel("AUC")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, folder / "loops.png")


def _save(fig: Any, file: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(file, dpi=110)
    plt.close(fig)
    return file
