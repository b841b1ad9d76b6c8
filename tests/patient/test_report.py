"""Reading a report: sections under any usual heading style, sentences that survive decimals and
abbreviations, text from .txt and PDF files, and one-line refusals of what cannot be read."""

from __future__ import annotations

from pathlib import Path

import pytest

from verticals.patient.config import PatientError
from verticals.patient.report import MAX_REPORT_CHARS, load_report, read_report

CAPITALS = """FINAL REPORT
EXAMINATION: CT chest without contrast.
INDICATION: ___ year old woman with cough.
COMPARISON: CT of ___.
FINDINGS:
1.  Stable 4 mm nodule in the right upper lobe (series 3, image 45). No pleural effusion.
2.  Dr. ___ reviewed the 2.3 x 1.5 cm mass, e.g. on the prior study.

IMPRESSION: Stable nodule.
"""


def test_headings_in_capitals_with_colons_split_the_sections_and_numbered_items_the_sentences() -> None:
    report = read_report(CAPITALS)
    assert [s.name for s in report.sections] == ["report", "technique", "indication", "comparison", "findings",
                                                 "impression"]
    assert [s.text for s in report.section("findings")] == [
        "Stable 4 mm nodule in the right upper lobe (series 3, image 45).", "No pleural effusion.",
        "Dr. ___ reviewed the 2.3 x 1.5 cm mass, e.g. on the prior study."]
    assert [s.text for s in report.section("impression")] == ["Stable nodule."]
    for sentence in report.sentences:  # each sentence is found where it says it is
        assert report.text[sentence.start:sentence.end] == sentence.text
    assert [s.index for s in report.sentences] == list(range(len(report.sentences)))


@pytest.mark.parametrize("text", [
    "Findings\nThe lungs are clear. No effusion.\n\nImpression\nNormal chest CT.\n",          # title case, no colons
    "FINDINGS\nThe lungs are clear. No effusion.\nIMPRESSION\nNormal chest CT.\n",            # capitals, no colons
    "Findings: The lungs are clear. No effusion.\nImpression: Normal chest CT.\n",             # text after the colon
])
def test_heading_styles(text: str) -> None:
    report = read_report(text)
    assert [s.text for s in report.section("findings")] == ["The lungs are clear.", "No effusion."]
    assert [s.text for s in report.section("impression")] == ["Normal chest CT."]


def test_a_report_without_headings_is_one_section_and_a_word_in_a_sentence_is_no_heading() -> None:
    report = read_report("The lungs are clear. Impression of the radiologist is that there is\nno effusion.")
    assert [s.name for s in report.sections] == ["report"]
    assert [s.text for s in report.sentences] == [
        "The lungs are clear.", "Impression of the radiologist is that there is\nno effusion."]


def test_lowercase_words_alone_on_a_line_are_not_headings() -> None:
    report = read_report("FINDINGS: Mild scarring at the\nbase\nof the left lung.")
    assert [s.name for s in report.sections] == ["findings"]


@pytest.mark.parametrize(("text", "message"), [
    ("", "empty"), ("  \n\t ", "empty"), ("x" * (MAX_REPORT_CHARS + 1), "characters"),
])
def test_empty_or_overlong_text_is_refused(text: str, message: str) -> None:
    with pytest.raises(PatientError, match=message):
        read_report(text)


def test_reports_load_from_text_and_pdf_files(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (tmp_path / "r.txt").write_text("\ufeffFINDINGS: No pleural effusion.\r\nIMPRESSION: Normal.\r\n", encoding="utf-8")
    assert [s.text for s in load_report(tmp_path / "r.txt").sentences] == ["No pleural effusion.", "Normal."]
    figure = plt.figure()
    figure.text(0.1, 0.8, "FINDINGS: No pleural effusion.")
    figure.text(0.1, 0.7, "IMPRESSION: Stable 4 mm nodule.")
    with matplotlib.rc_context({"pdf.fonttype": 42}):  # text a PDF reader can extract
        figure.savefig(tmp_path / "r.pdf")
    plt.close(figure)
    report = load_report(tmp_path / "r.pdf")
    assert [(s.section, s.text) for s in report.sentences] == [("findings", "No pleural effusion."),
                                                              ("impression", "Stable 4 mm nodule.")]


def test_files_that_hold_no_report_text_are_refused_in_one_line(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure()
    figure.savefig(tmp_path / "scan.pdf")  # a PDF without a text layer, as a scan is
    plt.close(figure)
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.7\nnot really a pdf")
    (tmp_path / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    cases = [(tmp_path / "missing.txt", "not found"), (tmp_path / "scan.pdf", "holds no text"),
             (tmp_path / "broken.pdf", "as a PDF"), (tmp_path / "image.txt", "not a text file")]
    for path, message in cases:
        with pytest.raises(PatientError, match=message):
            load_report(path)


def test_a_report_of_more_sentences_than_any_chest_report_is_refused() -> None:
    from verticals.patient import PatientError
    from verticals.patient.report import MAX_SENTENCES

    assert len(read_report("FINDINGS: " + "Nodule. " * MAX_SENTENCES).sentences) == MAX_SENTENCES
    with pytest.raises(PatientError, match="has 1,001 sentences; the most read is 1,000"):
        read_report("FINDINGS: " + "Nodule. " * (MAX_SENTENCES + 1))
