"""Scores of one task's predictions, with scikit-learn: macro-F1 (the paper's headline), accuracy,
per-class precision and recall, the unknown rate, the confusion matrix, AUROC where probabilities
exist, and a bootstrap 95% interval for macro-F1. And a paired bootstrap to compare two runs.

Unknown answers (prediction None) count as wrong: in F1 they are a miss of their gold class and a
false alarm of neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import f1_score, precision_recall_fscore_support, roc_auc_score

UNKNOWN = -1
BOOTSTRAP_DRAWS = 1000


def _codes(predictions: Sequence[int | None]) -> np.ndarray:
    return np.array([UNKNOWN if p is None else int(p) for p in predictions], dtype=int)


def macro_f1(gold: np.ndarray, predicted: np.ndarray) -> float:
    """Macro-F1 over classes 0 and 1 (`predicted` may hold UNKNOWN)."""
    return float(f1_score(gold, predicted, labels=[0, 1], average="macro", zero_division=0.0))


def task_scores(gold: Sequence[int], predictions: Sequence[int | None],
                probabilities: Sequence[float] | None = None, *, seed: int = 0) -> dict[str, Any]:
    """All scores of one task.

    Args:
        gold: labels 0/1.
        predictions: 1, 0 or None (unknown) per meme.
        probabilities: P(label 1) per meme, when the model gave them.
        seed: of the bootstrap.
    """
    y = np.asarray(gold, dtype=int)
    p = _codes(predictions)
    if len(y) == 0:
        raise ValueError("no memes to score")
    precision, recall, _, support = precision_recall_fscore_support(y, p, labels=[0, 1], zero_division=0.0)
    confusion = [[int(((y == g) & (p == q)).sum()) for q in (0, 1, UNKNOWN)] for g in (0, 1)]
    scores: dict[str, Any] = {
        "n": int(len(y)),
        "macro_f1": macro_f1(y, p),
        "macro_f1_ci95": bootstrap_interval(y, p, seed=seed),
        "accuracy": float((y == p).mean()),
        "unknown_rate": float((p == UNKNOWN).mean()),
        "precision": {"0": float(precision[0]), "1": float(precision[1])},
        "recall": {"0": float(recall[0]), "1": float(recall[1])},
        "support": {"0": int(support[0]), "1": int(support[1])},
        "confusion": {"rows": "gold 0, gold 1", "columns": "predicted 0, predicted 1, unknown", "counts": confusion},
    }
    if probabilities is not None:
        scores["auroc"] = float(roc_auc_score(y, probabilities)) if len(set(y.tolist())) == 2 else None
    return scores


def _resampled_macro_f1(gold: np.ndarray, predicted: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Macro-F1 of each resample (`rows`: draws x n indices) at once; the same numbers as `macro_f1`."""
    y, p = gold[rows], predicted[rows]
    f1 = []
    for label in (0, 1):
        hit = ((y == label) & (p == label)).sum(axis=1)
        false_alarm = ((y != label) & (p == label)).sum(axis=1)
        miss = ((y == label) & (p != label)).sum(axis=1)
        denominator = 2 * hit + false_alarm + miss
        f1.append(np.divide(2 * hit, denominator, out=np.zeros(len(rows)), where=denominator > 0))
    return (f1[0] + f1[1]) / 2


def bootstrap_interval(gold: np.ndarray, predicted: np.ndarray, *, draws: int = BOOTSTRAP_DRAWS,
                       seed: int = 0) -> list[float]:
    """The 2.5th and 97.5th percentiles of macro-F1 over memes resampled with replacement."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(gold), size=(draws, len(gold)))
    low, high = np.percentile(_resampled_macro_f1(gold, predicted, rows), [2.5, 97.5])
    return [float(low), float(high)]


def paired_bootstrap(gold: Sequence[int], first: Sequence[int | None], second: Sequence[int | None], *,
                     draws: int = BOOTSTRAP_DRAWS, seed: int = 0) -> dict[str, Any]:
    """Is `second` better than `first` on the same memes? Macro-F1 difference, its 95% interval, and the
    two-sided p-value of no difference (share of resamples on the other side of zero, doubled)."""
    y, a, b = np.asarray(gold, dtype=int), _codes(first), _codes(second)
    if not len(y) == len(a) == len(b):
        raise ValueError("the two runs must score the same memes")
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(y), size=(draws, len(y)))
    deltas = _resampled_macro_f1(y, b, rows) - _resampled_macro_f1(y, a, rows)
    observed = macro_f1(y, b) - macro_f1(y, a)
    worse, better = float((deltas <= 0).mean()), float((deltas >= 0).mean())
    low, high = np.percentile(deltas, [2.5, 97.5])
    return {"delta_macro_f1": float(observed), "ci95": [float(low), float(high)],
            "p_value": float(min(1.0, 2 * min(worse, better))), "n": int(len(y))}
