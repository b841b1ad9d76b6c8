"""Reading answers: a table of the answers models really give, and of the traps in them."""

from __future__ import annotations

import pytest

from verticals.goat.extract import read_answer


@pytest.mark.parametrize(("answer", "label", "rule"), [
    ("Yes", 1, "first_word"),
    ("No.", 0, "first_word"),
    ("yes, but only mildly", 1, "first_word"),
    ("  NO  ", 0, "first_word"),
    ("No, this meme is not hateful. It is a playful joke.", 0, "first_word"),
    ("The answer is yes.", 1, "yes_or_no"),
    ("I would say no", 0, "yes_or_no"),
    ("Is this meme hateful? Yes.", 1, "first_word"),  # the question echoed, then the verdict
    # no verdict at all
    ("Yes and no: it depends on the reader", None, "hedge"),
    ("It could be yes or no", None, "hedge"),
    ("Possibly yes.", None, "hedge"),
    ("I am not sure, but yes", None, "hedge"),
    ("Maybe.", None, "hedge"),
    ("It is hard to say.", None, "hedge"),
    ("Yes/No", None, "echo"),
    ("Given the meme, is this meme hateful? Answer: only Yes/No.", None, "echo"),
    ("Is this meme hateful?", None, "echo"),
    ("I'm sorry, I cannot help with that.", None, "refusal"),
    ("As an AI, I can't judge memes.", None, "refusal"),
    ("I cannot answer yes or no to this.", None, "refusal"),
    ("", None, "empty"),
    ("The image shows a cat.", None, "unreadable"),
    ("It is hateful in one way and not hateful in another", None, "unreadable"),
    # the adjective, negated or affirmed
    ("This meme is not hateful.", 0, "adjective"),
    ("It is non-hateful content", 0, "adjective"),
    ("I don't think it is hateful", 0, "adjective"),
    ("This meme doesn't seem hateful.", 0, "adjective"),
    ("It isn\u2019t hateful.", 0, "adjective"),  # a typographic apostrophe
    ("The meme is hateful towards a group.", 1, "adjective"),
])
def test_plain_answers(answer: str, label: int | None, rule: str) -> None:
    reading = read_answer(answer, "hateful")
    assert (reading.label, reading.rule) == (label, rule)


@pytest.mark.parametrize(("answer", "label"), [
    ("It is harmless.", 0), ("This is not harmless at all.", 1), ("It is harmful advice.", 1),
    ("Harmless, and not harmful.", 0),
])
def test_a_tasks_opposite_words(answer: str, label: int) -> None:
    assert read_answer(answer, "harmful", opposites=["harmless"]).label == label


@pytest.mark.parametrize(("answer", "label", "rule"), [
    ("The text mocks women drivers. The image supports it.\nAnswer: Yes", 1, "final_line"),
    ("First, no slur appears. Yes, the tone is light.\nFinal answer: No", 0, "final_line"),
    ("Answer: no\nWait, on reflection...\nAnswer: Yes", 1, "final_line"),
    ("Step 1: the caption is neutral.\n**Answer:** No", 0, "final_line"),
    ("The meme is harmless.\nSo, no.", 0, "yes_or_no"),  # no Answer: line, but a short verdict last
    # an echo of the instruction, or prose, is not a verdict
    ("I will reason, then write 'Answer: Yes' or 'Answer: No'.", None, "no_final_line"),
    ("The text says no one is welcome in the town, which targets the people who live there", None,
     "no_final_line"),
    ("I cannot answer yes or no to this.", None, "refusal"),
])
def test_chain_of_thought_answers_are_read_from_their_answer_line(answer: str, label: int | None, rule: str) -> None:
    reading = read_answer(answer, "misogynistic", final_line=True)
    assert (reading.label, reading.rule) == (label, rule)
