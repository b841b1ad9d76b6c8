"""Evaluation, the only reader of gold labels: AUC and accuracy on the held-out test rows.

Rows: the LLM zero-shot, the small model taught by it, the reverse-tuned LLM, and the oracle (the
same small model trained on gold labels). Oracle recovery = small-model AUC / oracle AUC, the
paper's headline ("recovers about 95% of the fully supervised AUC").
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, roc_auc_score

from verticals.files import write_text
from verticals.serval.run import LoopRecord, SersalRun

ROWS = ("llm_zero_shot", "small_model", "tuned_llm", "oracle")


#: bootstrap resamples of the test rows for the 95% intervals
RESAMPLES = 1000


def scores(gold: np.ndarray | None, probs: np.ndarray | None) -> dict[str, Any] | None:
    """AUC and accuracy (threshold 0.5) of `probs` against `gold`, each with a 95% bootstrap interval
    over the test rows (a few dozen rows cannot tell 0.61 from 0.57); None when either is missing."""
    if gold is None or probs is None or len(set(gold.tolist())) < 2:
        return None
    from scipy.stats import rankdata

    drawn = np.random.default_rng(0).integers(0, len(gold), (RESAMPLES, len(gold)))
    y, p = gold[drawn].astype(bool), np.asarray(probs, dtype=float)[drawn]
    positives = y.sum(1)
    both = (positives > 0) & (positives < y.shape[1])  # a resample of one class has no AUC
    ranks = rankdata(p, axis=1)  # ties share their mean rank, as the AUC's Mann-Whitney form needs
    negatives = y.shape[1] - positives
    aucs = ((ranks * y).sum(1) - positives * (positives + 1) / 2)[both] / (positives * negatives)[both]
    accuracies = ((p >= 0.5) == y).mean(1)
    return {"auc": float(roc_auc_score(gold, probs)), "accuracy": float(accuracy_score(gold, probs >= 0.5)),
            "auc_ci": [float(q) for q in np.quantile(aucs, [0.025, 0.975])],
            "accuracy_ci": [float(q) for q in np.quantile(accuracies, [0.025, 0.975])]}


def evaluate(run: SersalRun, loops: list[LoopRecord]) -> dict[str, Any]:
    """The results of a finished run as a JSON-ready dict (also written as `results.json`)."""
    test = run.rows("test")
    gold = None if run.data.labels is None else run.data.labels[test]
    passed = [r for r in loops if r.quality.passed]
    final = passed[-1] if passed else loops[0]
    tuned_loops = [r for r in loops if r.tuned is not None]
    kept = [r for r in tuned_loops if r.tuning is None or r.tuning.kept]
    shown = kept[-1] if kept else (tuned_loops[-1] if tuned_loops else None)  # the run's LLM, else the set-aside one
    tuned = _tuned_probs(run, loops, shown) if shown is not None else None
    oracle = run.oracle()
    table = {
        "llm_zero_shot": scores(gold, loops[0].annotations[test]),
        "small_model": scores(gold, final.small_probs[test]),
        "tuned_llm": scores(gold, tuned),
        "oracle": scores(gold, None if oracle is None else oracle[test]),
    }
    recovery = None
    if table["small_model"] and table["oracle"]:
        recovery = table["small_model"]["auc"] / table["oracle"]["auc"]
    per_loop = []
    for r in loops:
        tuned_r = _tuned_probs(run, loops, r) if r.tuned is not None else None
        per_loop.append({"loop": r.index, "llm": scores(gold, r.annotations[test]),
                         "small_model": scores(gold, r.small_probs[test]), "tuned_llm": scores(gold, tuned_r),
                         "quality": r.quality.to_dict(), "tune_examples": r.tune_examples,
                         "tuning_check": r.tuning.to_dict() if r.tuning else None, "notes": r.notes,
                         "unreadable": r.unreadable, "teacher": r.teacher.to_dict() if r.teacher else None})
    meta = run.data.meta
    results = {
        "dataset": meta.name, "title": meta.title, "question": meta.question, "llm": run.llm_spec,
        "annotator": run.annotator.name, "rows": len(run.data),
        "positives": None if run.data.labels is None else int(run.data.labels.sum()),
        "split": {part: len(run.rows(part)) for part in ("train", "check", "test")},
        "config": run.config.to_dict(), "table": table, "oracle_recovery": recovery,
        "final_loop": final.index, "gate_passed": bool(passed), "loops": per_loop,
        "tuned_llm_kept": None if shown is None else shown in kept,  # None: nothing was tuned
        "imputed": _imputed(run),
    }
    write_text(run.folder / "results.json", json.dumps(results, indent=2) + "\n")
    write_text(run.folder / "samples.jsonl", _samples(run, loops, final, tuned, oracle))
    return results


def _imputed(run: SersalRun) -> dict[str, int]:
    """Values filled in per feature (`missing = "impute"`): the LLM read "not recorded", the small model a median."""
    if run.data.meta.missing != "impute":
        return {}
    gaps = run.data.frame.isna().sum()
    return {str(column): int(n) for column, n in gaps.items() if n}


def _tuned_probs(run: SersalRun, loops: list[LoopRecord], record: LoopRecord) -> np.ndarray | None:
    later = next((n for n in loops if n.index == record.index + 1), None)
    return later.annotations[run.rows("test")] if later is not None else run.tuned_test_labels(record)


def _samples(run: SersalRun, loops: list[LoopRecord], final: LoopRecord, tuned: np.ndarray | None,
             oracle: np.ndarray | None) -> str:
    """One line per row: split, gold label, every model's P(positive). No feature values (no patient data)."""
    part = {int(i): name for name in ("train", "check", "test") for i in run.rows(name)}
    tuned_at = {int(i): float(p) for i, p in zip(run.rows("test"), tuned)} if tuned is not None else {}
    lines = []
    for i in range(len(run.data)):
        line = {"row": i, "split": part[i],
                "gold": None if run.data.labels is None else int(run.data.labels[i]),
                "llm": round(float(loops[0].annotations[i]), 6), "small_model": round(float(final.small_probs[i]), 6),
                "tuned_llm": round(tuned_at[i], 6) if i in tuned_at else None,
                "oracle": None if oracle is None else round(float(oracle[i]), 6)}
        lines.append(json.dumps(line))
    return "\n".join(lines) + "\n"
