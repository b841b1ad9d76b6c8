"""Reading a model's free-text answer as Yes (1), No (0) or unknown (None), by rule.

VLMEvalKit's rule at the core (yes without no, or no without yes), plus what real answers do: a
verdict as the first word ("Yes, but ..."), a chain of thought's final `Answer:` line, the
adjective negated ("I don't think it is hateful", "non-hateful") or affirmed ("it is hateful"),
a task's opposite word ("harmless"), refusals and hedges ("possibly yes" is not a yes), and a
model that only echoes the question ("Yes/No", "Is this meme hateful?"). An answer that cannot be
read is unknown: counted, reported, scored as wrong, never dropped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

YES, NO = 1, 0
_WORD = re.compile(r"[a-z']+")
#: a chain of thought's verdict: a line that starts with "Answer:" (or "Final answer: ...")
_FINAL = re.compile(r"^\W*(?:final\s+)?answer\s*(?:is)?\s*[:\-=]\s*\**\s*(yes|no)\b", re.IGNORECASE | re.MULTILINE)
#: the question's own words, which an echoing model repeats: they say nothing
_ECHO = re.compile(r"\byes\s*(?:/|or|and)\s*no\b|\bno\s*(?:/|or)\s*yes\b|answer:\s*only\b|[^.!?\n]*\?")
_REFUSAL = re.compile(r"\b(i can ?not|i can't|i'm unable|i am unable|i won't|as an ai|i'm sorry|i am sorry|"
                      r"i apologi[sz]e|not able to (?:help|assist|determine))\b")
_HEDGE = re.compile(r"\b(maybe|perhaps|possibly|probably|it depends|could be|might be|hard to (?:say|tell)|"
                    r"cannot (?:be )?determined?|can't (?:be )?determined?|unclear|not sure|ambiguous|"
                    r"difficult to (?:say|tell))\b")
_NEGATORS = {"not", "isn't", "isnt", "wasn't", "aren't", "don't", "doesn't", "didn't", "never", "hardly",
             "neither", "nor", "no", "non", "nothing", "without"}
_NEGATION_WINDOW = 5
#: a chain of thought without an Answer: line is read from its last line only when that line is this short
_SHORT_LAST_LINE = 8


@dataclass(frozen=True)
class Reading:
    """What an answer was read as: `label` 1, 0 or None (unknown), and the rule that decided."""

    label: int | None
    rule: str


def read_answer(answer: str, adjective: str = "", *, final_line: bool = False,
                opposites: Sequence[str] = ()) -> Reading:
    """Read `answer` as 1 (yes), 0 (no) or None (unknown).

    Args:
        answer: the model's raw reply.
        adjective: the task's adjective ("hateful"), to read "it is not hateful".
        final_line: a chain-of-thought answer: its last `Answer: Yes/No` line decides.
        opposites: words that mean the adjective's opposite ("harmless" for harmful).

    Example:
        >>> read_answer("No, it is not hateful.").label
        0
        >>> read_answer("The meme mocks a group.\\nAnswer: Yes", final_line=True).label
        1
    """
    text = answer.replace("\u2019", "'").replace("\u2018", "'").strip().lower()
    if not text:
        return Reading(None, "empty")
    if final_line:
        finals = _FINAL.findall(text)
        if finals:
            return Reading(YES if finals[-1].lower() == "yes" else NO, "final_line")
        text = text.splitlines()[-1].strip()  # no Answer: line: a short last line may still be a verdict
        if len(_WORD.findall(text)) > _SHORT_LAST_LINE:
            return Reading(None, "no_final_line")
    if text.startswith("yes and no"):
        return Reading(None, "hedge")
    text = _ECHO.sub(" ", text)  # "Yes/No", "is this meme hateful?": the prompt, not an answer
    words = _WORD.findall(text)
    if not words:
        return Reading(None, "echo")
    if words[0] in ("yes", "no"):
        return Reading(YES if words[0] == "yes" else NO, "first_word")
    if _HEDGE.search(text):
        return Reading(None, "hedge")
    has_yes, has_no = "yes" in words, "no" in words
    if has_yes != has_no:
        return Reading(YES if has_yes else NO, "yes_or_no")
    if _REFUSAL.search(text):
        return Reading(None, "refusal")
    verdict = _word_verdict(words, adjective.lower(), [o.lower() for o in opposites])
    if verdict is not None:
        return Reading(verdict, "adjective")
    return Reading(None, "unreadable")


def _word_verdict(words: list[str], adjective: str, opposites: list[str]) -> int | None:
    """1 if the adjective is affirmed, 0 if it is negated or an opposite affirmed, None if unclear."""
    votes = set()
    stem = adjective.split()[-1] if adjective else ""
    for i, word in enumerate(words):
        before = words[max(0, i - _NEGATION_WINDOW) : i]
        negated = any(w in _NEGATORS for w in before)
        if stem and word in (stem, f"non{stem}"):
            votes.add(NO if negated or word.startswith("non") else YES)
        elif word in opposites:
            votes.add(YES if negated else NO)
    return votes.pop() if len(votes) == 1 else None
