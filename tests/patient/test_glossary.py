"""The glossary: names, synonyms and abbreviations lead to one entry; the longest term in a text wins."""

from __future__ import annotations

import pytest

from verticals.patient.config import PatientError
from verticals.patient.glossary import CATEGORIES, Glossary, Term, glossary


@pytest.mark.parametrize(("name", "entry"), [
    ("GGO", "ground-glass opacity"), ("ground glass opacities", "ground-glass opacity"),
    ("RUL", "right upper lobe"), ("cxr", "chest x-ray"), ("  Pleural   Effusion ", "pleural effusion"),
])
def test_names_synonyms_and_abbreviations_lead_to_one_entry(name: str, entry: str) -> None:
    found = glossary().lookup(name)
    assert found is not None and found.term == entry


def test_the_longest_term_in_a_text_wins_and_unknown_words_find_nothing() -> None:
    terms = glossary()
    found = [(text, term.term) for start, end, term in terms.find("A right upper lobe GGO, and a banana.")
             for text in ["A right upper lobe GGO, and a banana."[start:end]]]
    assert found == [("right upper lobe", "right upper lobe"), ("GGO", "ground-glass opacity")]
    assert terms.lookup("banana") is None


def test_every_entry_is_complete_and_the_glossary_is_large_enough() -> None:
    entries = glossary().terms
    assert len(entries) >= 200
    assert all(t.definition and t.note and t.category in CATEGORIES for t in entries)


def test_a_name_under_two_entries_is_refused() -> None:
    with pytest.raises(PatientError, match="is under"):
        Glossary([Term("nodule", ("spot",), "finding", "a", "b"), Term("mass", ("Spot",), "finding", "c", "d")])
