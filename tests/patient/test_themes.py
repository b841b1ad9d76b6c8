"""The taxonomy and question set as data (every line usable, every theme taught and tested in every
voice) and the theme classifier on the held-out questions."""

from __future__ import annotations

from collections import Counter

import pytest

from verticals.patient.themes import VOICES, questions, themes
from verticals.patient.urgency import red_flags

PAPER = ["terminology", "location", "prognosis", "next_steps", "treatment"]


def test_the_paper_s_five_themes_are_verified_and_the_rest_are_marked_as_not() -> None:
    found = themes()
    assert [t for t in found if found[t].verified] == PAPER
    assert set(found) - set(PAPER) == {"size_severity", "causes_risk", "change_over_time", "procedure", "living_with",
                                       "urgent", "off_topic"}


def test_policies_send_prognosis_treatment_and_urgent_questions_to_the_care_team() -> None:
    found = themes()
    for theme in ("prognosis", "treatment", "next_steps", "urgent"):
        assert found[theme].policy.referral, theme
    assert found["terminology"].policy.answer_from == "glossary"
    assert any("recommend" in rule for rule in found["treatment"].policy.must_not)


@pytest.mark.parametrize(("split", "least"), [("train", 30), ("test", 20)])
def test_every_theme_is_asked_in_every_voice(split: str, least: int) -> None:
    asked = questions(split)
    per_theme = Counter(q.theme for q in asked)
    assert set(per_theme) == set(themes()) and min(per_theme.values()) >= least
    for theme in themes():
        assert {q.voice for q in asked if q.theme == theme} == set(VOICES), theme


def test_no_test_question_is_also_a_train_question() -> None:
    train = {" ".join(q.text.lower().split()) for q in questions("train")}
    assert not [q.text for q in questions("test") if " ".join(q.text.lower().split()) in train]


@pytest.mark.slow
def test_the_classifier_finds_the_theme_of_held_out_questions() -> None:
    from verticals.patient.classify import ThemeClassifier

    test = questions("test")
    guesses = ThemeClassifier().guess([q.text for q in test])
    accuracy = sum(g.theme == q.theme for g, q in zip(guesses, test)) / len(test)
    assert accuracy >= 0.85  # the target; 0.867 measured (benchmarks/patient.py)
    # the theme that must not be missed: the red-flag rules or the classifier catch it
    urgent = [(g, q) for g, q in zip(guesses, test) if q.theme == "urgent"]
    assert sum(g.theme == "urgent" or bool(red_flags(q.text)) for g, q in urgent) >= 0.95 * len(urgent)


@pytest.mark.parametrize(("question", "flagged"), [
    ("My husband cant breathe and his lips are blue", True),
    ("theres blod when i cough", True),
    ("I have crushing chest pain right now", True),
    ("my chest feels like it is being squeezed", True),
    ("she just collapsed", True),
    ("Will the collapsed part of my lung recover?", False),      # a finding, not an emergency
    ("What does a faint opacity mean?", False),                 # a radiology word
    ("I'm confused about the word nodule", False),               # puzzled, not delirious
    ("Can I exercise if I get breathless on stairs?", False),
])
def test_red_flags_in_questions(question: str, flagged: bool) -> None:
    assert bool(red_flags(question)) is flagged
