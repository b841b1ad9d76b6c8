"""Step 1 of SERSAL: soft labels P(positive) for every row, from an LLM or from a simulated annotator.

`LLMAnnotator` asks the zero-shot question built by `prompts.py`. Confidence comes from token
probabilities (`choice_probs`, the default), from a verbalised percentage, or from the share of "Yes"
over k samples (for servers without log-probabilities). Gold labels are never shown to it.

`SimulatedAnnotator` is a study tool, never a default: it derives soft labels of a chosen AUC from the
gold labels, so the loop's mechanism (does the small model beat its teacher?) can be measured and
tested deterministically.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from verticals.serval.config import ServalError, TeacherCeilingError
from verticals.serval.datasets import TabularData
from verticals.serval.prompts import PromptTemplate, questions

_NUMBER = re.compile(r"\d+(?:\.\d+)?")


@dataclass
class LLMAnnotator:
    """Zero-shot soft labels from a `LanguageModel`.

    Args:
        model (`LanguageModel`): any model behind `verticals.llm`.
        method (`str`): `logprobs` (P of the first choice among the two), `verbalized`, or `vote`.
        style (`str`): `described` (names, units, meanings) or `plain` (`column: value`).
        votes (`int`): samples per row for `vote`.
        template (`PromptTemplate`, *optional*): defaults to the packaged `prompts.toml`.
    """

    model: Any
    method: str = "logprobs"
    style: str = "described"
    votes: int = 5
    template: PromptTemplate | None = None
    progress: bool = True
    unreadable: int = 0  # rows of the last `annotate` whose answer could not be read (given 0.5)

    @property
    def name(self) -> str:
        return f"llm:{self.model.fingerprint}"

    def annotate(self, data: TabularData) -> np.ndarray:
        """P(positive) for each row of `data`, in [0, 1]; `unreadable` counts the rows whose replies
        could not be read (a verbalised reply without a percentage, or no vote answering yes or no):
        they get 0.5, and the run reports them and stops when they are too many."""
        template = self.template or PromptTemplate.load()
        self.unreadable = 0
        if self.method == "logprobs":
            chats = questions(data, template, self.style)
            return self.model.choice_probs(chats, list(template.choices), progress=self.progress)[:, 0]
        if self.method == "verbalized":
            chats = questions(data, template, self.style, kind="verbalized")
            replies = self.model.chat_batch(chats, max_tokens=8, progress=self.progress)
            read = [percent(r) for r in replies]
            self.unreadable = sum(p is None for p in read)
            return np.array([0.5 if p is None else p for p in read])
        chats = questions(data, template, self.style)
        yes, no = (c.lower() for c in template.choices)
        yeses, readable = np.zeros(len(chats)), np.zeros(len(chats))
        for seed in range(self.votes):
            replies = self.model.chat_batch(chats, max_tokens=3, temperature=1.0, seed=seed, progress=self.progress)
            said = [r.strip().lower() for r in replies]
            yeses += [s.startswith(yes) for s in said]
            readable += [s.startswith(yes) or s.startswith(no) for s in said]  # anything else is no vote
        self.unreadable = int((readable == 0).sum())
        return np.where(readable > 0, yeses / np.maximum(readable, 1), 0.5)


def percent(reply: str) -> float | None:
    """A verbalised confidence as a probability, or None when the reply gives none.

    "70", "70%" and "0.7" are 0.7; a whole number is a percentage ("1" is 1%, not 100%); a number
    above 100 is no confidence.
    """
    found = _NUMBER.search(reply)
    if found is None:
        return None
    text = found.group()
    value = float(text)
    if "." in text and value <= 1 and "%" not in reply[found.end():found.end() + 2]:
        return value
    return value / 100 if value <= 100 else None


@dataclass
class SimulatedAnnotator:
    """Soft labels of a chosen AUC, derived from gold labels (a study tool, named as such).

    Each row's score is `a t + s a b(x) + r`: the teacher's knowledge `t` of size `a`; a systematic,
    feature-dependent error `b(x)` (a seeded random direction over the standardised features, turned at
    right angles to the features' covariance with the label, so that it depends on the features alone and
    is uncorrelated with the label; unit variance) scaled to a share `s = systematic` of the knowledge;
    and random noise `r` filling the rest of a unit noise variance. Real LLM errors have both kinds: a
    small model averages the random part away but learns the systematic one. `a` is found by bisection so
    that the scores' AUC matches `auc`; soft labels are the scores Platt-scaled against the gold labels.

    The knowledge `t` is what an LLM could know: it sees a row's features, never its outcome. With
    `signal="features"` (the default) `t` is the out-of-fold log-odds of a logistic regression fitted on
    the gold labels, so the teacher cannot know more than the features tell (and a table whose features
    allow less than `auc` is an error). With `signal="label"`, `t = 2y - 1`: the teacher knows each row's
    outcome beyond its features, which no model of the features can learn.

    Args:
        auc (`float`): target AUC in (0.5, 1).
        systematic (`float`): size of the feature-dependent error relative to the knowledge, in [0, 1].
        seed (`int`): the noise, the direction and the folds.
        signal (`str`): `features` or `label`, what the teacher knows.
    """

    auc: float = 0.75
    systematic: float = 0.3
    seed: int = 0
    signal: str = "features"

    def __post_init__(self) -> None:
        if not 0.5 < self.auc < 1:
            raise ServalError(f"simulated annotator: auc should be in (0.5, 1), got {self.auc}")
        if not 0 <= self.systematic <= 1:
            raise ServalError(f"simulated annotator: systematic should be in [0, 1], got {self.systematic}")
        if self.signal not in ("features", "label"):
            raise ServalError(f"simulated annotator: signal should be features or label, got {self.signal!r}")

    @property
    def name(self) -> str:
        return f"simulated:auc={self.auc},systematic={self.systematic},seed={self.seed},signal={self.signal}"

    def annotate(self, data: TabularData) -> np.ndarray:
        if data.labels is None:
            raise ServalError("the simulated annotator needs gold labels (a target column) to derive from")
        y = data.labels.astype(int)
        if np.bincount(y, minlength=2).min() < 2:
            raise ServalError("the simulated annotator needs at least 2 rows of each class among the gold labels")
        rng = np.random.default_rng(self.seed)
        x, categorical = data.encode()
        x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
        direction = rng.standard_normal(x.shape[1])
        toward_y = x.T @ (y - y.mean())  # the direction along which features covary with the label
        if toward_y @ toward_y > 0:
            direction = direction - (direction @ toward_y) / (toward_y @ toward_y) * toward_y
        bias = x @ direction
        bias = bias / (bias.std() or 1.0)
        random = rng.standard_normal(len(y))
        knowledge = 2.0 * y - 1 if self.signal == "label" else _feature_knowledge(x, y, categorical, self.seed)

        def scores(a: float) -> np.ndarray:
            tilt = self.systematic * a  # the feature-dependent error is this share of the knowledge
            return a * knowledge + tilt * bias + math.sqrt(max(1 - tilt**2, 0.0)) * random

        ceiling = roc_auc_score(y, knowledge + self.systematic * bias)  # the noise gone: the best it can do
        if self.auc > ceiling - 0.005:
            raise TeacherCeilingError(f"simulated annotator: the features of {data.meta.name} allow a teacher of AUC "
                                      f"at most {ceiling:.3f} (systematic={self.systematic}); ask for less than "
                                      f"{self.auc}")
        low, high = 0.0, 10.0
        for _ in range(60):
            a = (low + high) / 2
            low, high = (a, high) if roc_auc_score(y, scores(a)) < self.auc else (low, a)
        score = scores((low + high) / 2)[:, None]
        return LogisticRegression(C=1e6).fit(score, y).predict_proba(score)[:, 1]


def _feature_knowledge(x: np.ndarray, y: np.ndarray, categorical: list[tuple[int, int]], seed: int) -> np.ndarray:
    """Out-of-fold log-odds of a logistic regression on the gold labels, standardised: what the features tell."""
    from sklearn.compose import ColumnTransformer
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    codes = [j for j, _ in categorical]
    encode = ColumnTransformer([("codes", OneHotEncoder(handle_unknown="ignore"), codes)], remainder="passthrough")
    model = make_pipeline(encode, LogisticRegression(max_iter=5000))
    folds = StratifiedKFold(min(5, int(np.bincount(y).min())), shuffle=True, random_state=seed)
    logit = cross_val_predict(model, x, y, cv=folds, method="decision_function")
    return (logit - logit.mean()) / (logit.std() or 1.0)


def make_annotator(spec: str, *, method: str = "logprobs", style: str = "described", votes: int = 5,
                   progress: bool = True, device: str = "auto", cache: Any = None) -> LLMAnnotator | SimulatedAnnotator:
    """The annotator named by `--llm`: `simulated:auc=0.75[,systematic=0.3,seed=0,signal=features]`, or a model.

    A model spec is what `verticals.llm.open_model` takes: `bundled`, a folder, or a server URL.

    Raises:
        ServalError: a malformed `simulated:` spec.
    """
    if spec.startswith("simulated"):
        _, _, body = spec.partition(":")
        pairs = [p.split("=", 1) for p in body.split(",") if p.strip()]
        if any(len(p) != 2 for p in pairs):
            raise ServalError(f"bad simulated annotator {spec!r}; write e.g. simulated:auc=0.75,systematic=0.3")
        options = {k.strip(): v.strip() for k, v in pairs}
        unknown = set(options) - {"auc", "systematic", "seed", "signal"}
        if unknown:
            raise ServalError(f"simulated annotator: unknown option(s) {sorted(unknown)}; "
                              "known: auc, systematic, seed, signal")
        try:
            auc, systematic = float(options.get("auc", 0.75)), float(options.get("systematic", 0.3))
            seed = int(float(options.get("seed", 0)))
        except ValueError:
            raise ServalError(f"bad simulated annotator {spec!r}; "
                              "write e.g. simulated:auc=0.75,systematic=0.3") from None
        return SimulatedAnnotator(auc=auc, systematic=systematic, seed=seed, signal=options.get("signal", "features"))
    from verticals.llm import open_model

    model = open_model(spec, device=device, cache=cache)
    return LLMAnnotator(model, method=method, style=style, votes=votes, progress=progress)
