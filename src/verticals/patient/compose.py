"""The template answer and the notices: what a person gets when there is no model, or when the
model's draft fails the check. Built from the glossary's definitions, the report's own sentences
(quoted, never reworded) and the theme's general text (`answers.toml`), so it cannot invent a
finding, a number or a treatment."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from verticals.patient.check import gives_advice
from verticals.patient.findings import ABSENT, UNCERTAIN, Mention, find_mentions, lexicon
from verticals.patient.glossary import Term, glossary
from verticals.patient.retrieve import Citation
from verticals.patient.themes import Theme

#: most glossary definitions in one template answer (the maxim of quantity)
MAX_TERMS = 2


@dataclass(frozen=True)
class Notice:
    """A fixed message added by code: `kind` is urgent_question, urgent_report, images, referral,
    unsure_theme or ai; urgent ones come first."""

    kind: str
    text: str


@lru_cache(maxsize=1)
def texts() -> dict[str, Any]:
    """The bundled wording (`answers.toml`)."""
    return tomllib.loads(resources.files("verticals.patient").joinpath("answers.toml").read_text("utf-8"))


def notices_for(theme: Theme, flags: list[str], urgent: list[Mention], *, unsure: bool,
                refer: bool = False) -> list[Notice]:
    """The notices an answer of `theme` carries, in order: urgent (question, then report), images,
    unsure theme, referral, and always the AI notice."""
    words = texts()["notice"]
    notices = []
    if flags or theme.id == "urgent":
        notices.append(Notice("urgent_question", words["urgent_question"]))
    for name in dict.fromkeys(m.name.split(" (")[0] for m in urgent):
        notices.append(Notice("urgent_report", words["urgent_report"].format(finding=name)))
    if theme.id == "location":
        notices.append(Notice("images", words["images"]))
    if unsure:
        notices.append(Notice("unsure_theme", words["unsure_theme"]))
    if (theme.policy.referral or refer) and theme.id != "urgent":
        notices.append(Notice("referral", words["referral_treatment" if theme.id == "treatment" else "referral"]))
    notices.append(Notice("ai", words["ai"]))
    return notices


def template_answer(theme: Theme, question: str, citations: list[Citation], claims: dict[str, str]) -> str:
    """The answer built from fixed parts: definitions, the report's sentences, the theme's general text."""
    words = texts()
    if theme.id in ("urgent", "off_topic"):
        return str(words[theme.id]["answer"])
    parts = []
    asked = find_mentions(question)
    if theme.policy.answer_from == "glossary" or theme.id == "procedure":
        parts += [_define(term) for term in _terms(question, citations)]
    if theme.policy.answer_from == "report":
        parts += _describe(theme.id, citations)
    parts += _not_in_report(asked, claims)
    quotable = [c for c in citations if not gives_advice(c.sentence.text)]  # never quote advice as an answer
    if quotable and theme.policy.answer_from != "report":
        parts.append("Your report says: " + " ".join(f"\u201c{c.sentence.text}\u201d" for c in quotable[:2]))
    if not citations and not parts:
        parts.append("I could not find anything about this in your report.")
    parts.append(str(words["general"].get(theme.id, "")))
    return "\n\n".join(p for p in parts if p)


def _terms(question: str, citations: list[Citation]) -> list[Term]:
    """Glossary terms the question names, else those of the best cited sentence."""
    found = [term for _, _, term in glossary().find(question)]
    if not found and citations:
        found = [term for _, _, term in glossary().find(citations[0].sentence.text)]
    return list(dict.fromkeys(found))[:MAX_TERMS]


def _define(term: Term) -> str:
    return f"\u201c{term.term.capitalize() if term.term.islower() else term.term}\u201d: {term.definition}"


def _describe(theme: str, citations: list[Citation]) -> list[str]:
    """What the cited sentences say of each finding they name: where, how big, how it changed."""
    lines = []
    for citation in citations:
        for mention in find_mentions(citation.sentence.text):
            # the report's own words for the finding, never the display name (which may hold other findings' words)
            if mention.certainty == ABSENT:
                lines.append(f"The report says there is no {mention.text.lower()}.")
                continue
            hedge = "may show" if mention.certainty == UNCERTAIN else "describes"
            details = []
            if theme == "location":
                details += [f"on the {mention.side} side" if mention.side in ("left", "right") else
                            "on both sides" if mention.side == "both" else ""]
                details += [f"in the {', '.join(mention.places)}" if mention.places else ""]
                details += [", ".join(f"series {s}, image {i}" for s, i in mention.images)]
            elif theme == "size_severity":
                details += [f"measuring {', '.join(mention.sizes)}" if mention.sizes else ""]
            else:
                details += [f"described as {', '.join(mention.changes)}" if mention.changes else ""]
            said = "; ".join(d for d in details if d)
            lines.append(f"The report {hedge}: {mention.text.lower()}{' (' + said + ')' if said else ''}.")
        if not gives_advice(citation.sentence.text):
            lines.append(f"In its words: \u201c{citation.sentence.text}\u201d")
    return list(dict.fromkeys(lines))


def _not_in_report(asked: list[Mention], claims: dict[str, str]) -> list[str]:
    """For a finding the question names: say plainly when the report does not mention it."""
    regions = {lexicon().findings[f].region for f, said in claims.items() if said != ABSENT}
    # only where nothing of the same kind is there: "does not mention tumour" beside a mass would reassure falsely
    missing = dict.fromkeys(m.text.lower() for m in asked if m.finding not in claims
                            and lexicon().findings[m.finding].region not in regions | {"other"})
    return [f"Your report does not mention {name}." for name in missing]
