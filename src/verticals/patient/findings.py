"""Findings in report sentences: which the sentence names, whether it says they are there, not
there, or maybe there, and what it says about them (side, place, size, change, image numbers).

The lexicon (`findings.toml`) maps report phrases to findings; the certainty rules
(`context.toml`) follow NegEx and ConText: a trigger ("no", "possible", "is not seen") reaches the
findings within `window` words of it, in its direction, until a termination word ("but",
"however", ";"); the closest trigger decides; a pseudo-trigger ("no change") is no trigger.

Example:
    >>> [(m.finding, m.certainty) for m in find_mentions("No pleural effusion or pneumothorax.")]
    [('pleural_effusion', 'absent'), ('pneumothorax', 'absent')]
"""

from __future__ import annotations

import re
import tomllib
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources

from verticals.patient.config import PatientError
from verticals.patient.image_refs import image_refs
from verticals.patient.report import Report, Sentence

PRESENT, ABSENT, UNCERTAIN = "present", "absent", "uncertain"
#: what a "history of" trigger gives: the mention is left out
HISTORICAL = "historical"
#: when one report says a finding several ways, the strongest claim stands for the report
_STRENGTH = {PRESENT: 2, UNCERTAIN: 1, ABSENT: 0}
_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*|[;:]")
_SIDES = {"right": "right", "left": "left", "bilateral": "both", "bilaterally": "both", "both": "both",
          "bibasilar": "both", "bibasal": "both"}
_PLACES = ("right upper lobe", "right middle lobe", "right lower lobe", "left upper lobe", "left lower lobe",
           "upper lobes", "lower lobes", "upper lobe", "middle lobe", "lower lobe", "lingula", "lingular", "apex",
           "apices", "apical", "base",
           "bases", "basilar", "basal", "bibasilar", "perihilar", "hilar", "hilum", "retrocardiac", "subpleural",
           "peripheral", "central", "costophrenic", "paratracheal", "subcarinal", "mediastinal", "lobe",
           "segment", "fissure", "rul", "rml", "rll", "lul", "lll")
_PLACE = re.compile(r"\b(?:" + "|".join(re.escape(p) for p in sorted(_PLACES, key=len, reverse=True)) + r")\b")
_SIZE = re.compile(r"\b\d+(?:\.\d+)?(?:\s*(?:x|by|\u00d7)\s*\d+(?:\.\d+)?)*\s*(?:mm|cm|millimeters?|centimeters?)\b")
_CHANGES = ("new", "newly", "stable", "unchanged", "increased", "increasing", "enlarging", "decreased",
            "decreasing", "smaller", "larger", "improved", "improving", "worsened", "worsening", "resolving",
            "interval", "persistent", "persists", "redemonstrated", "again seen", "no change", "not changed",
            "previously", "prior", "progressed", "progression", "grown", "growing", "shrunk")
_CHANGE = re.compile(r"\b(?:" + "|".join(re.escape(c) for c in sorted(_CHANGES, key=len, reverse=True)) + r")\b")
#: sentences longer than this (characters) are read in pieces cut after a comma or semicolon: a report
#: without full stops is one sentence, and the rules look at every trigger for every finding
MAX_PIECE = 400
_JOIN = re.compile(r"\band\b|,|;|\bwith\b|\bwhile\b")
#: terminations that end a trigger's reach but not a descriptor's: the verb between a finding and its place
_VERB_ENDS = frozenset({"is seen", "are seen", "is present", "are present", "is noted", "are noted", "again noted",
                        "there is", "there are", "now"})
#: how far (in words) a side, place, size or change word may sit from the finding it describes
_NEAR = 8


@dataclass(frozen=True)
class Finding:
    """A lexicon entry: the finding, the phrases that name it, and what it implies."""

    id: str
    name: str
    terms: tuple[str, ...]
    region: str
    urgent: bool = False
    urgent_if: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    normal: tuple[str, ...] = ()  # phrases that say it is not there ("heart size is normal")


@dataclass(frozen=True)
class Mention:
    """A finding named in a sentence, with the sentence's claim about it and its descriptors;
    `start`/`end` are offsets in the sentence, `cue` the trigger that decided the certainty."""

    finding: str
    name: str
    text: str
    start: int
    end: int
    certainty: str
    cue: str = ""
    side: str = ""
    places: tuple[str, ...] = ()
    sizes: tuple[str, ...] = ()
    changes: tuple[str, ...] = ()
    images: tuple[tuple[int, int], ...] = ()
    urgent: bool = False


@dataclass(frozen=True)
class Rules:
    """The certainty rules: phrase -> roles ("absent_before", "uncertain_after", "pseudo", "end", ...)."""

    roles: dict[str, frozenset[str]]
    window: int
    pattern: re.Pattern[str]


class Lexicon:
    """The findings of `findings.toml`, with one compiled pattern over every phrase."""

    def __init__(self, findings: Iterable[Finding], ignore: Iterable[str] = ()) -> None:
        self.findings = {f.id: f for f in findings}
        self._by_phrase: dict[str, tuple[Finding, bool]] = {}
        self._ignored = {" ".join(p.lower().split()) for p in ignore}
        for finding in self.findings.values():
            for phrase, normal in [(t, False) for t in finding.terms] + [(n, True) for n in finding.normal]:
                key = " ".join(phrase.lower().split())
                if key in self._by_phrase and self._by_phrase[key][0].id != finding.id:
                    raise PatientError(f"findings.toml: {key!r} names both {self._by_phrase[key][0].id} and "
                                       f"{finding.id}")
                self._by_phrase[key] = (finding, normal)
        phrases = sorted(set(self._by_phrase) | self._ignored, key=len, reverse=True)
        self._pattern = re.compile(r"\b(?:" + "|".join(_flexible(p) for p in phrases) + r")\b")

    def matches(self, lower: str) -> list[tuple[Finding, bool, int, int]]:
        """(finding, is-a-normal-phrase, start, end) of each phrase in a lower-cased sentence."""
        found = []
        for match in self._pattern.finditer(lower):
            if _key(match.group()) in self._ignored:  # "lung cancer screening" names no finding
                continue
            finding, normal = self._by_phrase[_key(match.group())]
            found.append((finding, normal, match.start(), match.end()))
        return found


def _key(text: str) -> str:
    return " ".join(text.split())


def _flexible(phrase: str) -> str:
    """A phrase as a pattern that allows any run of spaces (line breaks too) between its words."""
    return r"\s+".join(re.escape(word) for word in phrase.split())


@lru_cache(maxsize=1)
def lexicon() -> Lexicon:
    """The bundled lexicon (`findings.toml`), checked.

    Raises:
        PatientError: the file is malformed (a field missing or mistyped, a phrase under two findings).
    """
    table = tomllib.loads(resources.files("verticals.patient").joinpath("findings.toml").read_text("utf-8"))
    findings = []
    for key, entry in table.get("findings", {}).items():
        try:
            findings.append(Finding(key, str(entry["name"]), tuple(entry["terms"]), str(entry["region"]),
                                    bool(entry.get("urgent", False)), tuple(entry.get("urgent_if", ())),
                                    tuple(entry.get("labels", ())), tuple(entry.get("normal", ()))))
        except (KeyError, TypeError) as err:
            raise PatientError(f"findings.toml [findings.{key}]: missing or mistyped field {err}") from err
    if not findings:
        raise PatientError("findings.toml holds no findings")
    return Lexicon(findings, table.get("ignore", ()))


@lru_cache(maxsize=1)
def rules() -> Rules:
    """The bundled certainty rules (`context.toml`)."""
    table = tomllib.loads(resources.files("verticals.patient").joinpath("context.toml").read_text("utf-8"))
    roles: dict[str, set[str]] = {}
    for certainty in (ABSENT, UNCERTAIN):
        for direction in ("before", "after"):
            for phrase in table[certainty][direction]:
                roles.setdefault(_key(phrase.lower()), set()).add(f"{certainty}_{direction}")
    for phrase in table.get("historical", {}).get("before", ()):
        roles.setdefault(_key(phrase.lower()), set()).add("historical_before")
    for phrase in table["pseudo"]["phrases"]:
        roles.setdefault(_key(phrase.lower()), set()).add("pseudo")
    for phrase in table["termination"]["phrases"]:
        roles.setdefault(_key(phrase.lower()), set()).add("end")
    phrases = sorted(roles, key=len, reverse=True)
    pattern = re.compile("|".join(
        (r"\b" if p[0].isalnum() else "") + _flexible(p) + (r"\b" if p[-1].isalnum() else "") for p in phrases))
    return Rules({p: frozenset(r) for p, r in roles.items()}, int(table.get("window", 8)), pattern)


class _Words:
    """The words of a text, counted between two places by bisection (the rules ask this often)."""

    def __init__(self, text: str) -> None:
        self.spans = [(m.start(), m.end()) for m in _WORD.finditer(text)]
        self.starts = [s for s, _ in self.spans]
        self.ends = [e for _, e in self.spans]

    def between(self, start: int, end: int) -> int:
        return max(0, bisect_right(self.ends, end) - bisect_left(self.starts, start))

    def before(self, position: int, count: int) -> list[tuple[int, int]]:
        i = bisect_right(self.ends, position)
        return self.spans[max(0, i - count): i]


def find_mentions(sentence: str, lex: Lexicon | None = None) -> list[Mention]:
    """Every finding the sentence names, with its certainty and descriptors."""
    if len(sentence) <= MAX_PIECE:
        return _find(sentence, lex or lexicon())
    mentions = []
    for start, end in _pieces(sentence):
        for m in _find(sentence[start:end], lex or lexicon()):
            mentions.append(replace(m, start=m.start + start, end=m.end + start))
    return mentions


def _pieces(sentence: str) -> list[tuple[int, int]]:
    """(start, end) of pieces of at most about MAX_PIECE characters, cut after , or ; where possible."""
    pieces, start = [], 0
    while start < len(sentence):
        end = min(len(sentence), start + MAX_PIECE)
        if end < len(sentence):
            cut = max(sentence.rfind(",", start, end), sentence.rfind(";", start, end), sentence.rfind(" ", start, end))
            end = cut + 1 if cut > start else end
        pieces.append((start, end))
        start = end
    return pieces


def _lower(text: str) -> str:
    """Lower case of the same length (offsets must stay valid: "\u0130".lower() has two characters)."""
    lower = text.lower()
    if len(lower) != len(text):
        lower = "".join(c.lower() if len(c.lower()) == 1 else c for c in text)
    return lower.replace("\u2019", "'")


def _find(sentence: str, lex: Lexicon) -> list[Mention]:
    context = rules()
    lower = _lower(sentence)
    words = _Words(lower)
    matches = lex.matches(lower)
    taken = [(s, e) for _, _, s, e in matches]
    masked = lower  # triggers are looked for around the findings, never inside them ("no focal | focal nodule")
    for s, e in taken:
        masked = masked[:s] + "\x00" * (e - s) + masked[e:]
    triggers = [(m.start(), m.end(), context.roles[_key(m.group())]) for m in context.pattern.finditer(masked)]
    ends = [(s, e) for s, e, r in triggers if "end" in r]
    images = tuple((ref.series, ref.image) for ref in image_refs(lower) if ref.series is not None)
    mentions = []
    for finding, normal, start, end in matches:
        # a descriptor belongs to this finding when no clause break and no other finding stands between
        # ("emphysema is present in both upper lobes": the verb ends a negation's reach, not the place's)
        others = [(s, e) for s, e in taken if (s, e) != (start, end)]
        barriers = [(s, e) for s, e in ends if lower[s:e] not in _VERB_ENDS] + others
        if normal:
            certainty, cue = ABSENT, lower[start:end]
        else:
            certainty, cue = _certainty(start, end, triggers, ends, words, context.window, lower)
        if certainty == HISTORICAL:  # "history of colon cancer": the past, not this exam
            continue
        mentions.append(Mention(
            finding.id, finding.name, sentence[start:end], start, end, certainty, cue,
            side=_side(lower, start, end, words, barriers, others),
            places=_texts(_near(_PLACE, lower, start, end, words, barriers, others)),
            sizes=_texts(_near(_SIZE, lower, start, end, words, barriers, others)),
            changes=_texts(_near(_CHANGE, lower, start, end, words, barriers, others)),
            images=images,
            urgent=certainty != ABSENT and (finding.urgent or _qualified(lower, start, finding.urgent_if, words)),
        ))
    return mentions


def _certainty(start: int, end: int, triggers: list[tuple[int, int, frozenset[str]]], ends: list[tuple[int, int]],
               words: _Words, window: int, lower: str) -> tuple[str, str]:
    """The closest trigger in scope decides: before the finding (reaching forward) or after it (backward)."""
    best: tuple[int, str, str] | None = None
    for t_start, t_end, roles in triggers:
        if "pseudo" in roles:
            continue
        if t_end <= start:
            distance, direction = _words_between(words, t_end, start), "before"
            blocked = any(t_end <= e_start and e_end <= start for e_start, e_end in ends)
        elif t_start >= end:
            distance, direction = _words_between(words, end, t_start), "after"
            blocked = any(end <= e_start and e_end <= t_start for e_start, e_end in ends)
        else:
            continue
        for certainty in (HISTORICAL, UNCERTAIN, ABSENT):  # a phrase in both lists ("not excluded") is the hedge
            if f"{certainty}_{direction}" in roles and not blocked and distance <= window:
                if best is None or distance < best[0]:
                    best = (distance, certainty, lower[t_start:t_end])
                break
    return (best[1], best[2]) if best else (PRESENT, "")


def _words_between(words: _Words, start: int, end: int) -> int:
    return words.between(start, end)


def _near(pattern: re.Pattern[str], lower: str, start: int, end: int, words: _Words,
          barriers: list[tuple[int, int]], others: list[tuple[int, int]]) -> list[re.Match[str]]:
    """Matches of `pattern` within `_NEAR` words of the finding with no barrier (a clause break or another
    finding, `others`) between, nearest first; a match nearer to another finding is that one's."""
    found = []
    for match in pattern.finditer(lower):
        if match.start() < end and start < match.end():
            continue
        left, right = (match.end(), start) if match.end() <= start else (end, match.start())
        if any(left <= b_start and b_end <= right for b_start, b_end in barriers):
            continue
        gap = _words_between(words, left, right)
        # a word nearer to another finding describes that one ("4 mm right nodule and 3 mm left nodule")
        nearer = any(_words_between(words, *span) < gap and not _JOIN.search(lower, *span)
                     for span in _spans_to(match, others))
        # after "and" or a comma, a word before another finding is that finding's ("nodule and 3 mm ... nodule")
        handed_on = match.start() >= end and bool(_JOIN.search(lower, end, match.start())) and any(
            b_start >= match.end() for b_start, _ in others)
        # and back: before "and" or a comma, a word after another finding is that finding's ("nodule in the
        # right upper lobe and consolidation ...": the lobe is the nodule's, not the consolidation's)
        handed_back = match.end() <= start and bool(_JOIN.search(lower, match.end(), start)) and any(
            b_end <= match.start() for _, b_end in others)
        if gap <= _NEAR and not nearer and not handed_on and not handed_back:
            found.append((gap, match))
    return [m for _, m in sorted(found, key=lambda pair: pair[0])]


def _spans_to(match: re.Match[str], barriers: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The text spans between a descriptor and each barrier that does not overlap it."""
    return [(match.end(), b_start) if match.end() <= b_start else (b_end, match.start())
            for b_start, b_end in barriers if not (b_start < match.end() and match.start() < b_end)]


def _texts(matches: list[re.Match[str]]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(m.group() for m in matches))


_SIDE = re.compile(r"\b(?:" + "|".join(_SIDES) + r")\b")


def _side(lower: str, start: int, end: int, words: _Words, barriers: list[tuple[int, int]],
          others: list[tuple[int, int]]) -> str:
    near = _near(_SIDE, lower, start, end, words, barriers, others)
    return _SIDES[near[0].group()] if near else ""


def _qualified(lower: str, start: int, qualifiers: tuple[str, ...], words: _Words) -> bool:
    """Whether a qualifier ("large", "tension") sits in the few words just before the finding."""
    before = [lower[s:e] for s, e in words.before(start, 4)]
    return any(q.lower() in before for q in qualifiers)


def strongest(certainties: Iterable[str]) -> str:
    """The claim that stands for a finding said several ways in one report: present > uncertain > absent."""
    return max(certainties, key=_STRENGTH.__getitem__)


def report_mentions(report: Report, lex: Lexicon | None = None) -> list[tuple[Sentence, list[Mention]]]:
    """Each sentence of the report with the findings it names."""
    return [(sentence, find_mentions(sentence.text, lex)) for sentence in report.sentences]


def report_findings(report: Report, lex: Lexicon | None = None) -> dict[str, str]:
    """What the report says about each finding it names: present, uncertain or absent (the
    strongest claim where it says several; the impression is not weighted over the findings)."""
    return claims_of(m for _, found in report_mentions(report, lex) for m in found)


def claims_of(mentions: Iterable[Mention]) -> dict[str, str]:
    """The strongest claim per finding among mentions already found (see `report_findings`)."""
    said: dict[str, list[str]] = {}
    for mention in mentions:
        said.setdefault(mention.finding, []).append(mention.certainty)
    return {finding: strongest(claims) for finding, claims in said.items()}
