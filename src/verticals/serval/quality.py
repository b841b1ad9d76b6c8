"""Step 3 of SERSAL: a quality gate that reads no gold label.

The paper gates reverse tuning on the small model's quality without saying how (our reconstruction,
see docs/serval.md). We look at three label-free signals:

- agreement: AUC of the small model's probabilities on the check split (rows it was not trained on)
  against the LLM's labels cut at their median (the LLM's ranking counts, not its calibration). It must
  beat chance: at least `min_agreement` and above what a random ranking of that many rows reaches
  5% of the time (a weak teacher caps agreement near its own AUC, so the floor stays low);
- clean fraction: the share of rows the noisy-label learner kept as clean;
- drift: mean absolute change of the small model's probabilities since the previous loop.

After reverse tuning, the tuned LLM is kept unless it agrees with the small model on the check rows
(never trained on, by either) measurably less than the LLM before tuning did (a paired bootstrap of
the difference, one-sided 5%): tuning that moved the LLM away from its student is set aside, and the
run ends. The bar is not "more than before" because the LLM before tuning taught the small model
and so starts close to it.

A loop fails when the small model did not learn the LLM's labels (agreement below `min_agreement`),
when the check split is too small to tell its agreement from chance (a student that outgrew a weak
teacher agrees with it at about the teacher's own AUC, so small tables need rows), or when, after
the first loop, agreement fell: the previous loop's models are kept. A loop whose predictions barely
moved (drift below `converged`) passes but ends the run.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import rankdata


@dataclass(frozen=True)
class Quality:
    """The gate's reading of one loop."""

    agreement: float
    clean_fraction: float | None
    drift: float | None
    passed: bool
    stop: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def agreement(llm_labels: np.ndarray, small_probs: np.ndarray) -> float:
    """AUC of `small_probs` against `llm_labels` cut at their median; 0.5 when the LLM gave one value."""
    cut = llm_labels > np.median(llm_labels)
    if cut.all() or not cut.any():
        cut = llm_labels >= np.median(llm_labels)
    if cut.all() or not cut.any():
        return 0.5
    return _auc(cut, small_probs)


def _auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count half): equal to scikit-learn's `roc_auc_score`
    without its input checks, which cost milliseconds a call, too slow for a 1,000-draw bootstrap."""
    ranks = rankdata(scores)
    n_pos = int(positive.sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (len(positive) - n_pos)))


def chance_se(n: int) -> float:
    """Standard error of the AUC of a random ranking of `n` rows split in half (Hanley-McNeil null)."""
    half = max(n // 2, 1)
    return float(np.sqrt((2 * half + 1) / (12 * half * half)))


def judge(llm_labels: np.ndarray, small_probs: np.ndarray, check: np.ndarray, *, clean_fraction: float | None,
          previous: Quality | None, previous_probs: np.ndarray | None, min_agreement: float = 0.55,
          converged: float = 0.01, last_loop: bool = False) -> Quality:
    """Judge a loop from the LLM's labels and the small model's probabilities (all rows; `check` indexes)."""
    score = agreement(llm_labels[check], small_probs[check])
    floor = max(min_agreement, 0.5 + 1.645 * chance_se(len(check)))  # one-sided 5% test
    drift = None if previous_probs is None else float(np.abs(small_probs - previous_probs).mean())
    if score < min_agreement:
        return Quality(score, clean_fraction, drift, False, True,
                       f"the small model did not learn the LLM's labels (agreement {score:.3f} < {min_agreement:.3f})")
    if score < floor:  # a student that outgrew a weak teacher lands here too: agreement is capped near its AUC
        return Quality(score, clean_fraction, drift, False, True,
                       f"agreement {score:.3f} cannot be told from chance on {len(check)} check rows (needs "
                       f"{floor:.3f}); a larger table (or a larger --max-rows) gives the gate the power to pass it")
    if previous is not None and score < previous.agreement:
        return Quality(score, clean_fraction, drift, False, True,
                       f"agreement fell from {previous.agreement:.3f} to {score:.3f}: keeping the previous loop")
    if drift is not None and drift < converged:
        return Quality(score, clean_fraction, drift, True, True,
                       f"predictions moved by {drift:.4f} < {converged}: converged")
    reason = "last loop" if last_loop else "the small model learned the LLM's labels"
    return Quality(score, clean_fraction, drift, True, last_loop, reason)


@dataclass(frozen=True)
class TuningCheck:
    """Did reverse tuning move the LLM away from the small model on rows neither trained on?"""

    before: float
    after: float
    kept: bool
    reason: str
    se: float | None = None  # bootstrap standard error of `after - before`

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def judge_tuning(small_probs: np.ndarray, before: np.ndarray, after: np.ndarray, *, resamples: int = 1000,
                 seed: int = 0) -> TuningCheck:
    """Compare the LLM's labels before and after tuning against the small model's ranking (check rows).

    The reference is the small model cut at its median (the gate's `agreement` cuts the LLM instead).
    The LLM before tuning taught the small model, so "agrees more than before" is a biased bar: on
    heart disease it set aside a tuning that raised the LLM's test AUC from 0.672 to 0.713 (0.851 vs
    0.884, a fall of 0.6 standard errors). So the tuned LLM is set aside only when its agreement fell
    by more than 1.645 paired-bootstrap standard errors; the harmful tunings measured fell by 4 to 7.
    """
    was, now = agreement(small_probs, before), agreement(small_probs, after)  # the small model's cut is the reference
    rng = np.random.default_rng(seed)
    draws = (rng.integers(0, len(small_probs), len(small_probs)) for _ in range(resamples))
    se = float(np.std([agreement(small_probs[i], after[i]) - agreement(small_probs[i], before[i]) for i in draws]))
    bar = was - 1.645 * se
    if now >= bar:
        return TuningCheck(was, now, True, f"the tuned LLM agrees with the small model {now:.3f} (before {was:.3f}, "
                                           f"set aside below {bar:.3f})", se)
    fell = (was - now) / max(se, 1e-12)
    return TuningCheck(was, now, False, f"the tuned LLM agrees with the small model less ({now:.3f} against "
                                        f"{was:.3f} before, {fell:.1f} standard errors) on the check rows: "
                                        "set aside, the run ends", se)


#: least spread (95th minus 5th percentile) of the teacher's P(positive) over the rows. The bundled 135M
#: model spans little everywhere: 0.036 on heart disease (where it knows something: AUC 0.71), 0.014 on
#: breast cancer (AUC 0.57), 0.018 on MASS biopsy (0.61); so this catches a near-constant teacher only
MIN_SPREAD = 0.02
#: least rank correlation (Spearman) of the teacher's answers to the same rows asked in two wordings
#: (described and plain records): 0.55 on heart disease, -0.24 on breast cancer (150 rows each)
MIN_STABILITY = 0.3
#: most rows asked again in the other wording (the check costs this many more questions)
STABILITY_ROWS = 200


@dataclass(frozen=True)
class TeacherCheck:
    """Does the zero-shot LLM say anything about this table? Checked without labels, before teaching.

    It cannot catch a teacher that is consistently wrong: a ranking that is spread out and survives
    rewording, but ranks the rows backwards or by something other than the outcome.
    """

    spread: float
    stability: float | None  # None: the annotator has no second wording (a simulated one)
    rows: int  # rows asked in both wordings
    ok: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_teacher(labels: np.ndarray, again: np.ndarray | None, asked: np.ndarray) -> TeacherCheck:
    """Judge the teacher from its soft labels on every row and, for the `asked` rows, in a second wording."""
    from scipy.stats import spearmanr

    low, high = np.quantile(labels, [0.05, 0.95])
    spread = float(high - low)
    stability = None
    if again is not None and len(asked) >= 3:
        first = labels[asked]
        constant = np.ptp(first) == 0 or np.ptp(again) == 0
        stability = 0.0 if constant else float(spearmanr(first, again).statistic)
    problems = []
    if spread < MIN_SPREAD:
        problems.append(f"its P(positive) spans only {spread:.3f} between the 5th and 95th percentile of the rows "
                        f"(at least {MIN_SPREAD} needed)")
    if stability is not None and stability < MIN_STABILITY:
        problems.append(f"its ranking of {len(asked)} rows changes when the records are worded differently (rank "
                        f"correlation {stability:.2f} between described and plain records; at least {MIN_STABILITY} "
                        "needed)")
    reason = "; ".join(problems) or (f"spread {spread:.3f}" + (f", rank correlation across wordings {stability:.2f}"
                                                               if stability is not None else ""))
    return TeacherCheck(spread, stability, len(asked) if again is not None else 0, not problems, reason)
