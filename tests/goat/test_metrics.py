"""Scores against scikit-learn, unknowns counted wrong, and intervals that cover what they claim."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from verticals.goat.metrics import paired_bootstrap, task_scores


def test_scores_match_scikit_learn_with_unknowns_as_misses() -> None:
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 300)
    predicted = [int(g) if rng.random() < 0.7 else (None if rng.random() < 0.3 else 1 - int(g)) for g in gold]
    probabilities = np.clip(gold * 0.3 + rng.random(300) * 0.7, 0, 1)
    scores = task_scores(gold.tolist(), predicted, probabilities.tolist())
    as_codes = [-1 if p is None else p for p in predicted]
    assert scores["macro_f1"] == pytest.approx(f1_score(gold, as_codes, labels=[0, 1], average="macro"))
    assert scores["accuracy"] == pytest.approx(accuracy_score(gold, as_codes))
    assert scores["unknown_rate"] == pytest.approx(sum(p is None for p in predicted) / 300)
    assert scores["auroc"] == pytest.approx(roc_auc_score(gold, probabilities))
    counts = np.array(scores["confusion"]["counts"])
    assert counts.sum() == 300 and counts[:, 2].sum() == sum(p is None for p in predicted)
    low, high = scores["macro_f1_ci95"]
    assert low < scores["macro_f1"] < high


def test_an_unknown_is_never_a_hit() -> None:
    perfect = task_scores([0, 1, 0, 1], [0, 1, 0, 1])
    unsure = task_scores([0, 1, 0, 1], [0, 1, 0, None])
    assert perfect["macro_f1"] == 1.0 and unsure["macro_f1"] < 1.0 and unsure["accuracy"] == 0.75


def test_the_bootstrap_interval_covers_the_true_macro_f1_about_95_percent_of_the_time() -> None:
    """A classifier with known error rates on a balanced population: its true macro-F1 follows from them."""
    rng = np.random.default_rng(1)
    sensitivity, specificity = 0.8, 0.7
    tp, fn, tn, fp = sensitivity, 1 - sensitivity, specificity, 1 - specificity  # per half of the population
    true_f1 = (2 * tp / (2 * tp + fp + fn) + 2 * tn / (2 * tn + fn + fp)) / 2
    covered = 0
    for trial in range(200):
        gold = rng.integers(0, 2, 250)
        right = rng.random(250) < np.where(gold == 1, sensitivity, specificity)
        predicted = np.where(right, gold, 1 - gold)
        low, high = task_scores(gold.tolist(), predicted.tolist(), seed=trial)["macro_f1_ci95"]
        covered += low <= true_f1 <= high
    assert 0.89 <= covered / 200 <= 0.99


def test_paired_bootstrap_finds_a_better_run_and_no_difference_between_equals() -> None:
    rng = np.random.default_rng(2)
    gold = rng.integers(0, 2, 400)
    weak = np.where(rng.random(400) < 0.65, gold, 1 - gold)
    strong = np.where(rng.random(400) < 0.85, gold, 1 - gold)
    better = paired_bootstrap(gold.tolist(), weak.tolist(), strong.tolist())
    assert better["delta_macro_f1"] > 0.1 and better["ci95"][0] > 0 and better["p_value"] < 0.01
    same = paired_bootstrap(gold.tolist(), weak.tolist(), weak.tolist())
    assert same["delta_macro_f1"] == 0 and same["p_value"] == 1.0
