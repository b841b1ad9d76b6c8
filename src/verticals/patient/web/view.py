"""What the page shows of a report: its sentences as nested marks (findings, glossary terms) over
the exact text, so the browser only lays out text nodes and never parses HTML from a report.

A sentence's marks are properly nested: where a finding and a glossary term only partly overlap
("pleural" of a term against "effusion" of a finding), the term is left unmarked; findings win.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from verticals.patient.anatomy import anatomy, diagram
from verticals.patient.compose import notices_for
from verticals.patient.findings import Mention, claims_of, report_mentions
from verticals.patient.glossary import glossary
from verticals.patient.image_refs import image_refs
from verticals.patient.report import Report, Sentence
from verticals.patient.themes import themes
from verticals.patient.urgency import urgent_findings

Node = dict[str, Any]


def report_view(report: Report) -> dict[str, Any]:
    """The page's view of a report: text, heading ranges, sentences as trees of marks, the glossary
    terms used, what the report says of each finding, and the urgent notices it needs."""
    read = report_mentions(report)
    mentions = [m for _, found in read for m in found]
    terms: dict[str, dict[str, str]] = {}
    sentences = []
    for sentence, found in read:
        marks = [(m.start, m.end, _finding(m)) for m in found]
        for start, end, term in glossary().find(sentence.text):
            terms[term.term] = {"term": term.term, "definition": term.definition}
            marks.append((start, end, {"kind": "term", "term": term.term}))
        sentences.append({"index": sentence.index, "section": sentence.section, "start": sentence.start,
                          "end": sentence.end, "nodes": nest(sentence.text, marks),
                          "images": [asdict(ref) for ref in image_refs(sentence.text)]})
    names = {m.finding: m.name for m in mentions}
    urgent = urgent_findings(mentions)
    notices = notices_for(themes()["off_topic"], [], urgent, unsure=False)
    return {
        "text": report.text,
        "headings": _headings(report),
        "sentences": sentences,
        "terms": terms,
        "findings": [{"finding": f, "name": names[f], "certainty": c, "urgent": any(m.finding == f for m in urgent)}
                     for f, c in claims_of(mentions).items()],
        "notices": [{"kind": n.kind, "text": n.text} for n in notices if n.kind.startswith("urgent")],
        "diagram": _diagram(report, read),
    }


def _diagram(report: Report, read: list[tuple[Sentence, list[Mention]]]) -> dict[str, Any]:
    found = diagram(report, read)
    return {"svg": found.svg(styled=False), "parts": found.parts, "names": anatomy().parts,
            "spots": [{"part": s.part, "finding": s.finding, "sentence": s.sentence, "certainty": s.certainty}
                      for s in found.spots],
            "unplaced": [{"finding": u.finding, "sentence": u.sentence, "why": u.why} for u in found.unplaced]}


def _headings(report: Report) -> list[dict[str, int]]:
    found = ((report.text.find(s.heading, s.start), s.heading) for s in report.sections if s.heading)
    return [{"start": at, "end": at + len(heading)} for at, heading in found if at >= 0]


def _finding(m: Mention) -> Node:
    return {"kind": "finding", "certainty": m.certainty, "name": m.name, "urgent": m.urgent}


def nest(text: str, marks: list[tuple[int, int, Node]]) -> list[Node]:
    """`text` as a list of nodes: plain `{"text"}` leaves and `marks` (start, end, node) holding their
    part as `children`, nested; a mark that crosses an earlier-kept one, or is empty, is dropped.
    Findings are kept before terms, longer before shorter."""
    kept: list[tuple[int, int, Node]] = []
    order = sorted(marks, key=lambda m: (m[2].get("kind") != "finding", -(m[1] - m[0]), m[0]))
    for start, end, node in order:
        if 0 <= start < end <= len(text) and all(
                end <= s or e <= start or (s <= start and end <= e) or (start <= s and e <= end)
                for s, e, _ in kept):
            kept.append((start, end, node))
    kept.sort(key=lambda m: (m[0], -(m[1] - m[0])))
    return _build(text, 0, len(text), kept)


def _build(text: str, start: int, end: int, marks: list[tuple[int, int, Node]]) -> list[Node]:
    nodes: list[Node] = []
    at, i = start, 0
    while i < len(marks):
        s, e, node = marks[i]
        inner = []
        j = i + 1
        while j < len(marks) and marks[j][0] < e:
            inner.append(marks[j])
            j += 1
        if at < s:
            nodes.append({"text": text[at:s]})
        nodes.append({**node, "children": _build(text, s, e, inner)})
        at, i = e, j
    if at < end:
        nodes.append({"text": text[at:end]})
    return nodes
