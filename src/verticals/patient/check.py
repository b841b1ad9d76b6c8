"""The check every model draft passes before anyone sees it. Code, not a prompt: a draft fails when
it names a finding the report lacks or negates, a number the report and question do not hold, a
medicine or a dose, a recommendation to start, stop or choose a treatment, or a certain verdict on
the person's health ("it is cancer", "nothing to worry about"); or when it says the same thing
again, repeats the prompt's scaffolding, or runs far past three sentences. A failed draft is never
shown; the answer falls back to the template built from the glossary and the report's own words."""

from __future__ import annotations

import re
import tomllib
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from verticals.patient.findings import find_mentions

#: the draft is asked for three short sentences; more is the maxim of quantity broken
MAX_SENTENCES = 5
MAX_WORDS = 110
#: the prompt's own scaffolding, which a small model repeats instead of answering
_ECHO = re.compile(r"<<<|>>>|report sentences|quoted data|definitions:|^\s*answer:|the answer is:|question:",
                   re.IGNORECASE | re.MULTILINE)
#: a size or dose in words ("four millimeters"): numbers are checked, words must be too
_NUMBER_WORDS = re.compile(
    r"\b(?:one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|fifteen|twenty|thirty|forty|fifty|"
    r"hundred|half)\s+(?:mm|cm|millimet\w*|centimet\w*|milligram\w*|mg|inch\w*|percent)\b", re.IGNORECASE)
_SIDE_WORD = re.compile(r"\b(left|right)\b")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?(?![\w.]*\d)")
_DOSE = re.compile(r"\b\d+(?:\.\d+)?\s*(?:mg|mcg|µg|ug|g|ml|mL|units?|iu|puffs?|tablets?|pills?|times a day)\b",
                   re.IGNORECASE)
_RECOMMENDATION = re.compile(
    r"\b(?:you|he|she|they|your \w+) (?:should|must|need to|ought to|has to|have to) (?:start|stop|take|have|get|"
    r"choose|try|use|avoid|undergo|begin|switch|go for|consider)\b"
    r"|\b(?:i|we)(?: would|'d)? (?:recommend|suggest|advise|prescribe)\b|\bmy (?:recommendation|advice) is\b"
    r"|\b(?:do not|don't|doesn't|does not) need (?:a|an|any|to|more|further)\b|\bno (?:further|more) tests?\b"
    r"|^\s*(?:stop|start|take|avoid|quit|get|have|go|call off|cancel|skip)\b"
    r"|\b(?:start|stop|begin|keep) taking\b|\bthe best (?:treatment|option|choice|therapy)\b"
    r"|\b(?:surgery|radiation|radiotherapy|chemotherapy|treatment|a biopsy) (?:is|would be) (?:better|best|"
    r"the right choice|recommended)\b|\byou (?:need|require) (?:surgery|treatment|radiation|chemotherapy|"
    r"antibiotics|an operation)\b",
    re.IGNORECASE | re.MULTILINE)
_VERDICT = re.compile(
    r"\b(?:you|he|she|they) (?:definitely |certainly |probably )?(?:have|has) (?:lung )?cancer\b"
    r"|\b(?:it|this|that|the \w+)(?: is|'s| looks| seems| appears)(?: to be)? (?:definitely |certainly |surely |"
    r"probably |likely |clearly )?(?:a |an )?(?:cancer|cancerous|malignant|malignancy|benign|harmless|nothing|"
    r"not cancer|not serious|serious|fine|tumou?r)\b|\bnothing to worry about\b"
    r"|\b(?:you|he|she|they)(?: will|'ll) (?:be fine|be ok|die|recover|survive|be cured)\b|\bno need to worry\b"
    r"|\b\d+\s*(?:%|percent) (?:chance|survival|risk)\b|\b(?:looks|seems) like (?:a )?cancer\b",
    re.IGNORECASE)


@dataclass(frozen=True)
class Failure:
    """One reason a draft may not be shown: which check, and what it caught."""

    check: str
    detail: str


@lru_cache(maxsize=1)
def _drugs() -> re.Pattern[str]:
    table = tomllib.loads(resources.files("verticals.patient").joinpath("drugs.toml").read_text("utf-8"))
    names = sorted({n.lower() for n in table["names"]}, key=len, reverse=True)
    return re.compile(r"\b(?:" + "|".join(r"\s+".join(map(re.escape, n.split())) for n in names) + r")\b",
                      re.IGNORECASE)


def check_draft(draft: str, report_claims: dict[str, str], allowed_text: str,
                report_sides: dict[str, set[str]] | None = None) -> list[Failure]:
    """Every reason the draft fails (empty when it may be shown).

    Args:
        draft: the model's answer.
        report_claims: what the report says of each finding it names (`report_findings`).
        allowed_text: what the draft rests on (the cited sentences and definitions): the numbers it may use.
        report_sides: the sides the report gives each finding, to refuse a draft that moves one.
    """
    failures = []
    if len(draft.split()) < 3:
        failures.append(Failure("empty", draft.strip()[:40]))
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", draft.strip()) if s]
    seen: set[str] = set()
    for sentence in sentences:  # a small model that loops says the same thing again
        key = " ".join(re.findall(r"[a-z0-9]+", sentence.lower()))
        if key in seen:
            failures.append(Failure("repetition", sentence[:60]))
            break
        seen.add(key)
    words = re.findall(r"[a-z0-9']+", draft.lower())
    grams = Counter(tuple(words[i: i + 5]) for i in range(len(words) - 4))
    if grams and grams.most_common(1)[0][1] >= 3 and not any(f.check == "repetition" for f in failures):
        failures.append(Failure("repetition", " ".join(grams.most_common(1)[0][0])))
    echo = _ECHO.search(draft)
    if echo:
        failures.append(Failure("echo", echo.group()))
    if len(sentences) > MAX_SENTENCES or len(draft.split()) > MAX_WORDS:
        failures.append(Failure("too_long", f"{len(sentences)} sentences, {len(draft.split())} words"))
    for sentence in sentences:
        for mention in find_mentions(sentence):
            said = report_claims.get(mention.finding)
            if said is None:
                failures.append(Failure("finding_not_in_report", mention.text))
            elif said != mention.certainty:  # a hedge made certain, a finding denied, a negation dropped
                failures.append(Failure(f"finding_{said}_in_report", f"{mention.text} said {mention.certainty}"))
            sides = (report_sides or {}).get(mention.finding, set())
            if mention.side in ("left", "right") and sides and mention.side not in sides:
                failures.append(Failure("side", f"{mention.text} on the {mention.side}"))
    said_sides = set(_SIDE_WORD.findall(allowed_text.lower()))
    failures += [Failure("side", word) for word in dict.fromkeys(_SIDE_WORD.findall(draft.lower()))
                 if word not in said_sides]  # "the left lung has the problem" when the sources say no side
    allowed = {n.replace(",", ".") for n in _NUMBER.findall(allowed_text)}
    for number in _NUMBER.findall(draft):
        if number.replace(",", ".") not in allowed:
            failures.append(Failure("number_not_in_report", number))
    failures += [Failure("number_in_words", m.group()) for m in _NUMBER_WORDS.finditer(draft)]
    failures += [Failure("dose", m.group()) for m in _DOSE.finditer(draft)]
    failures += [Failure("drug", m.group()) for m in _drugs().finditer(draft)]
    failures += [Failure("recommendation", m.group()) for m in _RECOMMENDATION.finditer(_plain(draft))]
    failures += [Failure("certain_verdict", m.group()) for m in _VERDICT.finditer(_plain(draft))]
    return failures


def gives_advice(text: str) -> bool:
    """Whether a text (a report sentence to be quoted, say) names a medicine or a dose or recommends."""
    plain = _plain(text)
    return bool(_drugs().search(text) or _DOSE.search(text) or _RECOMMENDATION.search(plain))


def _plain(text: str) -> str:
    """Curly apostrophes straight, and each sentence on its own line (imperatives are found at line starts)."""
    return re.sub(r"(?<=[.!?])\s+", "\n", text.replace("\u2019", "'"))
