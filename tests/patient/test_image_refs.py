"""The image numbers a report cites, read from the ways radiologists write them."""

from __future__ import annotations

import pytest

from verticals.patient import find_mentions
from verticals.patient.image_refs import image_refs

PHRASINGS = [
    ("A 6 mm nodule in the right upper lobe (series 3, image 45).", [(3, 45, None)]),
    ("series 3 image 45", [(3, 45, None)]),
    ("Series #3, image #45", [(3, 45, None)]),
    ("SERIES 3, IMAGE 45", [(3, 45, None)]),
    ("se 3 im 45", [(3, 45, None)]),
    ("Se:3 Im:45", [(3, 45, None)]),
    ("image 45 of series 3", [(3, 45, None)]),
    ("image 45, series 3", [(3, 45, None)]),
    ("series 3/image 45", [(3, 45, None)]),
    ("series/image 3/45", [(3, 45, None)]),
    ("series 3, images 40-45", [(3, 40, 45)]),
    ("images 40 to 45 of series 2", [(2, 40, 45)]),
    ("series 3, image 45\u201350", [(3, 45, 50)]),
    ("nodule (image 45)", [(None, 45, None)]),
    ("series 4, image 12 and series 4, image 30", [(4, 12, None), (4, 30, None)]),
    ("Series 2 and image 7", [(2, 7, None)]),
    ("no image here", []),
    ("compared to the image of the prior study", []),
    ("measuring 4 mm (previously 3 mm)", []),
    ("Contiguous axial images 1.25 mm thick were obtained.", []),
    ("Axial images 2 mm were reconstructed.", []),
    ("images at 5 mm intervals", []),
]


@pytest.mark.parametrize(("text", "expected"), PHRASINGS)
def test_citations_are_read_from_every_usual_phrasing(text: str, expected: list[tuple]) -> None:
    refs = image_refs(text)
    assert [(r.series, r.image, r.last) for r in refs] == expected
    for ref in refs:  # the offsets point at the citation itself
        assert str(ref.image) in text[ref.start:ref.end]


def test_a_finding_carries_the_images_its_sentence_cites() -> None:
    mention = find_mentions("There is a 6 mm nodule in the right upper lobe (image 45 of series 3).")[0]
    assert mention.finding == "pulmonary_nodule" and mention.images == ((3, 45),)
