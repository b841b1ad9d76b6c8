"""The chest diagram lights the parts the report's findings name, and only those."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from verticals.patient import read_report
from verticals.patient.anatomy import anatomy, diagram

SVG = "{http://www.w3.org/2000/svg}"
RIGHT_LUNG = {"right_upper_lobe", "right_middle_lobe", "right_lower_lobe"}

CASES = [
    ("There is a 6 mm nodule in the right upper lobe (series 3, image 45).", {"right_upper_lobe": "present"}),
    ("Bibasilar atelectasis.", {"right_lower_lobe": "present", "left_lower_lobe": "present"}),
    ("Scarring at the left apex.", {"left_upper_lobe": "present"}),
    ("Consolidation in the RLL.", {"right_lower_lobe": "present"}),
    ("Lingular atelectasis.", {"lingula": "present"}),
    ("Retrocardiac opacity.", {"left_lower_lobe": "present"}),
    ("Small right pleural effusion.", {"right_pleura": "present"}),
    ("Bilateral pleural effusions.", {"right_pleura": "present", "left_pleura": "present"}),
    ("Cardiomegaly.", {"heart": "present"}),
    ("Possible pneumonia in the left lower lobe.", {"left_lower_lobe": "uncertain"}),
    ("Nodule in the right lung.", dict.fromkeys(RIGHT_LUNG, "present")),
    ("Opacity in the upper lobes.", {"right_upper_lobe": "present", "left_upper_lobe": "present"}),
    ("No pneumothorax. No pleural effusion.", {}),
    ("Mild emphysema.", {}),
    ("Healed right rib fracture.", {}),
]


@pytest.mark.parametrize(("text", "lit"), CASES)
def test_the_diagram_lights_the_parts_a_finding_names(text: str, lit: dict[str, str]) -> None:
    assert diagram(read_report(f"FINDINGS: {text}")).parts == lit


def test_what_cannot_be_drawn_is_listed_with_the_reason() -> None:
    found = diagram(read_report("FINDINGS: Mild emphysema. Healed right rib fracture. No effusion."))
    assert [(u.finding, u.why) for u in found.unplaced] == [("emphysema", "no place"), ("rib fracture", "elsewhere")]
    placed = diagram(read_report("INDICATION: Nodules on prior CT. FINDINGS: A nodule in the right upper lobe."))
    assert placed.unplaced == () and placed.parts == {"right_upper_lobe": "present"}  # drawn once is enough


def test_the_drawing_marks_lit_parts_and_keeps_report_words_out_of_its_markup() -> None:
    found = diagram(read_report("FINDINGS: Nodule in the right upper lobe <script>alert(1)</script>. "
                                "Possible consolidation at the left base."))
    root = ET.fromstring(found.svg())
    classes = {e.get("id"): e.get("class", "") for e in root.iter(f"{SVG}path")}
    assert classes["right_upper_lobe"].split() == ["part", "lit"]
    assert classes["left_lower_lobe"].split() == ["part", "maybe"]
    assert "lit" not in classes["heart"] and "maybe" not in classes["heart"]
    assert "script" not in found.svg()
    titles = {e.get("id"): e.find(f"{SVG}title").text for e in root.iter(f"{SVG}path")
              if e.find(f"{SVG}title") is not None}
    assert titles["right_upper_lobe"] == "right upper lobe: lung nodule"
    assert set(anatomy().parts) <= {e.get("id") for e in root.iter(f"{SVG}path")}
