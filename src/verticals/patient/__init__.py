"""The patient report assistant (after Rajagopal et al., arXiv 2402.00234): help a patient or
caregiver understand a chest radiology report without harming them.

So far it reads the report (its sections and sentences; the findings each sentence names with what
it says about them: there, not there, maybe there; side, place, size, change, image numbers; the
glossary's plain-language definitions of its terms) and the question (its theme in the taxonomy of
information needs, with that theme's response policy; red-flag symptoms that call for urgent care),
and answers it: the report sentences that bear on it, a model's draft checked in code (or a
template from the glossary and the report's words), and the notices the theme needs.

Example:
    >>> from verticals.patient import read_report, report_findings
    >>> report_findings(read_report("FINDINGS: No pleural effusion. Possible small pneumothorax."))
    {'pleural_effusion': 'absent', 'pneumothorax': 'uncertain'}
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from verticals.patient.answer import MAX_QUESTION_CHARS, Answer, answer, answer_stream
from verticals.patient.check import Failure, check_draft
from verticals.patient.compose import Notice
from verticals.patient.config import PatientError

if TYPE_CHECKING:
    from verticals.patient.classify import ThemeClassifier, ThemeGuess, classifier
from verticals.patient.findings import Finding, Mention, find_mentions, lexicon, report_findings, report_mentions
from verticals.patient.glossary import Term, glossary
from verticals.patient.report import Report, Section, Sentence, load_report, read_report
from verticals.patient.themes import Policy, Question, Theme, questions, themes
from verticals.patient.urgency import red_flags, urgent_findings

__all__ = ["MAX_QUESTION_CHARS", "Answer", "Failure", "Finding", "Mention", "Notice", "PatientError", "Policy",
           "Question", "Report", "Section", "Sentence", "Term", "Theme", "ThemeClassifier", "ThemeGuess", "answer",
           "answer_stream", "check_draft", "classifier", "find_mentions", "glossary", "lexicon", "load_report",
           "questions", "read_report", "red_flags", "report_findings", "report_mentions", "themes",
           "urgent_findings"]


def __getattr__(name: str) -> Any:
    # scikit-learn and the sentence encoder load only when a question is classified
    if name in ("ThemeClassifier", "ThemeGuess", "classifier"):
        return getattr(importlib.import_module("verticals.patient.classify"), name)
    raise AttributeError(f"module 'verticals.patient' has no attribute {name!r}")
