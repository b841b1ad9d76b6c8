"""Image numbers a report cites ("series 3, image 45"): where to find a finding on the CT itself.

Radiologists write them many ways: "series 3, image 45", "(series 3 image 45)", "series #3 image
#45", "se 3 im 45", "3/45" after "series/image", "image 45 of series 3", "series 3, images 40-45"
(the first image of the range is where the viewer goes). An image number without a series is kept
with `series` None: the viewer then looks in the series it shows.

Example:
    >>> image_refs("A 6 mm nodule in the right upper lobe (series 3, image 45).")
    [ImageRef(series=3, image=45, last=None, start=39, end=57)]
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# a number, not a measure: "images 1.25 mm thick" and "images 2 mm" are technique, not citations
_N = r"#?\s*(\d{1,5})(?![.,]\d|\d|\s*(?:mm|cm|millimet|centimet|%|percent|x\b))"
_SERIES = r"(?:series|ser|se)\.?:?\s*"
_IMAGE = r"(?:images?|imgs?|im|slices?)\.?:?\s*"
_RANGE = r"(?:\s*(?:-|\u2013|to|through)\s*(\d{1,5})(?![.,]\d|\d|\s*(?:mm|cm|%)))?"
_PATTERNS = (
    # series first: "series 3, image 45", "se 3 im 45", "series 3/image 45", "series 3 images 40-45"
    ("series_image", re.compile(rf"\b{_SERIES}{_N}\s*(?:[,/;:]|,?\s*and)?\s*{_IMAGE}{_N}{_RANGE}", re.IGNORECASE)),
    # "image 45 of series 3", "image 45, series 3", "images 40-45 on series 3"
    ("image_series", re.compile(rf"\b{_IMAGE}{_N}{_RANGE}\s*(?:,|of|on|in|from)?\s*{_SERIES}{_N}", re.IGNORECASE)),
    # "series/image 3/45"
    ("pair", re.compile(r"\bseries\s*/\s*image\s*:?\s*(\d{1,5})\s*/\s*(\d{1,5})", re.IGNORECASE)),
    # "image 45" alone
    ("image", re.compile(rf"\b(?:images?|img)\.?:?\s*{_N}{_RANGE}\b", re.IGNORECASE)),
)


@dataclass(frozen=True)
class ImageRef:
    """One cited image: its series (None when the report names only the image), its number, the last
    number of a cited range, and where the citation sits in the text (character offsets)."""

    series: int | None
    image: int
    last: int | None
    start: int
    end: int


def image_refs(text: str) -> list[ImageRef]:
    """Every image citation in `text`, in reading order; a span read by one pattern is not read again."""
    found: list[ImageRef] = []
    taken: list[tuple[int, int]] = []
    for kind, pattern in _PATTERNS:
        for match in pattern.finditer(text):
            if any(match.start() < end and start < match.end() for start, end in taken):
                continue
            groups = match.groups()
            if kind == "series_image":
                series, image, last = int(groups[0]), int(groups[1]), groups[2]
            elif kind == "image_series":
                image, last, series = int(groups[0]), groups[1], int(groups[2])
            elif kind == "pair":
                series, image, last = int(groups[0]), int(groups[1]), None
            else:
                series, image, last = None, int(groups[0]), groups[1]
            found.append(ImageRef(series, image, int(last) if last else None, match.start(), match.end()))
            taken.append((match.start(), match.end()))
    return sorted(found, key=lambda ref: ref.start)
