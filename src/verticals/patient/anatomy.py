"""The chest diagram: which parts of the lungs, pleura, heart and mediastinum the report's findings name.

Offline and for any model, this is how "where is it?" gets a useful, true answer without looking at
pixels: the report says "right upper lobe", the diagram lights the right upper lobe, with the
report's words beside it. Findings the report says are absent light nothing; those it says may be
there are lit as "maybe". Where the report names no place the finding is listed, not drawn; bones,
belly and devices are not on a chest diagram and are listed as elsewhere.

The mapping from report words to parts is a data file (`anatomy.toml`); the drawing is `lobes.svg`.
"""

from __future__ import annotations

import re
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from verticals.patient.config import PatientError
from verticals.patient.findings import PRESENT, UNCERTAIN, Mention, lexicon, report_mentions
from verticals.patient.report import Report, Sentence

_SVG = "{http://www.w3.org/2000/svg}"
_SIDES = {"right": ("right",), "left": ("left",), "both": ("right", "left")}
_REGION_KINDS = ("side", "pleura", "none")


@dataclass(frozen=True)
class Spot:
    """A finding on the diagram: the part, the finding in plain words, the report's sentence (index and
    words), the report's claim (present or uncertain) and the images the sentence cites."""

    part: str
    finding: str
    sentence: int
    words: str
    certainty: str
    images: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Unplaced:
    """A finding the diagram cannot show: `why` is "no place" (the report names none) or "elsewhere"."""

    finding: str
    sentence: int
    words: str
    why: str


@dataclass(frozen=True)
class Diagram:
    spots: tuple[Spot, ...]
    unplaced: tuple[Unplaced, ...]

    @property
    def parts(self) -> dict[str, str]:
        """Each lit part with its strongest claim (present over uncertain)."""
        lit: dict[str, str] = {}
        for spot in self.spots:
            if lit.get(spot.part) != PRESENT:
                lit[spot.part] = spot.certainty
        return lit

    def svg(self, styled: bool = True) -> str:
        """`lobes.svg` with the lit parts marked (class `lit`, or `maybe` for uncertain findings) and
        each lit part's title saying which findings are there; `styled=False` leaves out the drawing's
        own `<style>` (a page whose security policy refuses inline styles styles it from its sheet)."""
        return lit_svg(self, styled)


@dataclass(frozen=True)
class _Anatomy:
    parts: dict[str, str]
    places: dict[str, tuple[str, ...]]
    sided: dict[str, dict[str, str]]
    regions: dict[str, str]


@lru_cache(maxsize=1)
def anatomy() -> _Anatomy:
    """`anatomy.toml`, checked against the diagram and the findings lexicon.

    Raises:
        PatientError: a part the drawing lacks, a region the lexicon lacks or one without a rule.
    """
    raw = tomllib.loads(resources.files("verticals.patient").joinpath("anatomy.toml").read_text())
    parts = {str(k): str(v) for k, v in raw["parts"].items()}
    drawn = {e.get("id") for e in ET.fromstring(_drawing()).iter() if e.get("id")}
    missing = set(parts) - drawn
    if missing:
        raise PatientError(f"anatomy.toml: parts {sorted(missing)} are not drawn in lobes.svg")
    places = {str(k): tuple(v) for k, v in raw["places"].items()}
    sided = {str(k): {s: str(p) for s, p in v.items()} for k, v in raw["sided"].items()}
    named = {p for ps in places.values() for p in ps} | {p for v in sided.values() for p in v.values()}
    regions = {str(k): str(v) for k, v in raw["regions"].items()}
    named |= {v for v in regions.values() if v not in _REGION_KINDS}
    if named - set(parts):
        raise PatientError(f"anatomy.toml: {sorted(named - set(parts))} are not among [parts]")
    unruled = {f.region for f in lexicon().findings.values()} - set(regions)
    if unruled:
        raise PatientError(f"anatomy.toml: no rule in [regions] for {sorted(unruled)}")
    return _Anatomy(parts, places, sided, regions)


@lru_cache(maxsize=1)
def _drawing() -> str:
    return resources.files("verticals.patient").joinpath("lobes.svg").read_text()


def where(mention: Mention, region: str) -> tuple[str, ...]:
    """The diagram parts a mention names (empty: no place stated, or not on a chest diagram)."""
    book = anatomy()
    rule = book.regions[region]
    sides = _SIDES.get(mention.side or "", ())
    if rule == "none":
        return ()
    if rule == "pleura":
        return tuple(f"{side}_pleura" for side in sides)
    if rule != "side":
        return (rule,)
    found: list[str] = []
    own = [p for p in (*book.places, *book.sided) if re.search(rf"\b{re.escape(p)}\b", mention.text.lower())]
    for place in (*mention.places, *own):  # "bibasilar atelectasis" is one phrase: its place is inside it
        if place in book.places:
            found += book.places[place]
        elif place in book.sided:
            found += [book.sided[place][side] for side in (sides or ("right", "left"))]
    if not found:  # a side and no place: the whole lung of that side
        found = [p for p in book.parts if p.endswith("_lobe") or p == "lingula"
                 if any(p.startswith(side) or (p == "lingula" and side == "left") for side in sides)]
    return tuple(dict.fromkeys(found))


def diagram(report: Report, read: list[tuple[Sentence, list[Mention]]] | None = None) -> Diagram:
    """The report's present and uncertain findings placed on the chest diagram (`read`: the report's
    mentions, when the caller has them already)."""
    findings = lexicon().findings
    spots, unplaced = [], []
    for sentence, mentions in read if read is not None else report_mentions(report):
        for mention in mentions:
            if mention.certainty not in (PRESENT, UNCERTAIN):
                continue
            region = findings[mention.finding].region
            name = mention.name.split(" (")[0]
            parts = where(mention, region)
            if not parts:
                why = "elsewhere" if anatomy().regions[region] == "none" else "no place"
                unplaced.append(Unplaced(name, sentence.index, sentence.text, why))
            spots += [Spot(part, name, sentence.index, sentence.text, mention.certainty, mention.images)
                      for part in parts]
    placed = {spot.finding for spot in spots}  # "nodules on prior CT" adds nothing when a nodule is drawn
    return Diagram(tuple(spots), tuple(u for u in unplaced if u.finding not in placed))


def lit_svg(found: Diagram, styled: bool = True) -> str:
    """The drawing with `found`'s parts marked; built from our own data file, never from report text
    (the titles are set as text nodes, so the report's words cannot become markup)."""
    ET.register_namespace("", _SVG[1:-1])
    root = ET.fromstring(_drawing())
    if not styled:
        for style in root.findall(f"{_SVG}style"):
            root.remove(style)
    lit = found.parts
    names = anatomy().parts
    for element in root.iter(f"{_SVG}path"):
        part = element.get("id", "")
        if part not in lit:
            continue
        element.set("class", f"{element.get('class', '')} {'lit' if lit[part] == PRESENT else 'maybe'}".strip())
        title = element.find(f"{_SVG}title")
        if title is None:
            title = ET.SubElement(element, f"{_SVG}title")
        here = sorted({s.finding for s in found.spots if s.part == part})
        title.text = f"{names[part]}: {', '.join(here)}"
    return ET.tostring(root, encoding="unicode")
