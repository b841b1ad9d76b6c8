"""The report sentences that bear on a question: MiniLM similarity between the question and each
sentence, plus the findings and glossary terms they share (a question about "the nodule" wants the
sentences that name a nodule, whatever their wording). Answers cite what this returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from verticals.patient.findings import find_mentions
from verticals.patient.glossary import glossary
from verticals.patient.report import Report, Sentence

#: below this score a sentence is not cited (cosine similarity, plus SHARED for a shared finding or term)
MIN_SCORE = 0.35
#: what sharing a finding or a glossary term with the question adds to a sentence's score
SHARED = 0.3
#: sentences of these sections are about the exam, not the person: cited only when nothing else fits
_EXAM_SECTIONS = ("technique", "comparison", "indication")


@dataclass(frozen=True)
class Citation:
    """A report sentence an answer rests on, and how strongly it matched the question."""

    sentence: Sentence
    score: float


def shared_keys(text: str) -> set[str]:
    """Findings (by id) and glossary terms (by name) a text names."""
    keys = {f"finding:{m.finding}" for m in find_mentions(text)}
    keys |= {f"term:{term.term}" for _, _, term in glossary().find(text)}
    return keys


def retrieve(report: Report, question: str, *, limit: int = 3) -> list[Citation]:
    """Up to `limit` sentences that bear on the question, best first (none when nothing does)."""
    from verticals.encoders import embed_texts

    sentences = [s for s in report.sentences if len(s.text) > 3]
    if not sentences:
        return []
    vectors = embed_texts([question] + [s.text for s in sentences])  # normalised: dot = cosine
    similarity = vectors[1:] @ vectors[0]
    asked = shared_keys(question)
    scores = []
    for sentence, cosine in zip(sentences, similarity):
        score = float(cosine) + (SHARED if asked & shared_keys(sentence.text) else 0.0)
        if sentence.section in _EXAM_SECTIONS:
            score -= 0.1
        scores.append(score)
    order = np.argsort(scores)[::-1][:limit]
    return [Citation(sentences[i], scores[i]) for i in order if scores[i] >= MIN_SCORE]
