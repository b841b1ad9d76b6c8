"""Reading a radiology report: its text (pasted, a `.txt`, or a PDF with a text layer), its sections
and its sentences, each with its place in the text so answers can cite it and a page can highlight it.

Sections follow the usual headings (indication or history, technique, comparison, findings,
impression), in capitals or not, with a colon or alone on their line; a report without headings is
one section. Sentences end at a full stop, question or exclamation mark followed by a line break,
or by a space and a capital or digit; paragraphs and numbered or bulleted items end one too;
"2.3 cm", "Dr. ___" and "e.g." do not end one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verticals.patient.config import PatientError

#: the longest report read (characters): far above any real report, and bounded for the web page
MAX_REPORT_CHARS = 50_000
#: most sentences read (a chest CT report has well under 100): every question reads them all
MAX_SENTENCES = 1_000
#: the largest report file read (a PDF of a few pages is far smaller)
MAX_FILE_BYTES = 20_000_000
#: most pages of a report PDF read
MAX_PDF_PAGES = 100
#: most bytes one PDF stream may inflate to (a page of text is a few kB)
MAX_PDF_STREAM = 2_000_000
#: most bytes of page drawing instructions read over all pages (each page counts its own, shared or not)
MAX_PDF_DRAWING = 2_000_000
#: headings and the section each names
HEADINGS = {
    "indication": ("indication", "indications", "clinical indication", "history", "clinical history",
                   "reason for exam", "reason for examination", "clinical information", "clinical details"),
    "technique": ("technique", "procedure", "protocol", "examination", "exam"),
    "comparison": ("comparison", "comparisons", "prior", "prior studies"),
    "findings": ("findings", "finding", "report"),
    "impression": ("impression", "impressions", "conclusion", "conclusions", "summary", "opinion",
                   "recommendation", "recommendations"),
}
_HEADING_WORDS = {word: section for section, words in HEADINGS.items() for word in words}
#: "FINDINGS:" or "Findings: The lungs ..." (a heading with a colon, text may follow on its line)
_WITH_COLON = re.compile(r"[ \t]*(?P<word>[A-Za-z][A-Za-z ]{0,30}?)[ \t]*:[ \t]*")
#: where a new block starts inside a section: a blank line, or a numbered or bulleted item
_BLOCK = re.compile(r"\n[ \t]*\n\s*|\n(?=[ \t]*(?:\d{1,2}[.)]|[-*\u2022])[ \t]+)")
_ITEM = re.compile(r"[ \t]*(?:\d{1,2}[.)]|[-*\u2022])[ \t]+")
#: where a sentence may end: . ! or ? then space and something that starts a sentence
_BOUNDARY = re.compile(r"(?<![.!?])[.!?]++[\"')]*(?:[ \t]*\n\s*|\s+(?=[\"'(]?[A-Z0-9_]))")
#: abbreviations whose full stop does not end a sentence
_ABBREVIATIONS = {"dr.", "mr.", "mrs.", "ms.", "vs.", "approx.", "e.g.", "i.e.", "fig.", "st.", "cf."}


@dataclass(frozen=True)
class Sentence:
    """One sentence: its index in the report, its section, its text and where it sits in the report."""

    index: int
    section: str
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Section:
    """A part of the report under one heading (`name` is one of HEADINGS' keys, or "report")."""

    name: str
    heading: str
    start: int
    end: int


@dataclass(frozen=True)
class Report:
    """The report's text, sections and sentences."""

    text: str
    sections: list[Section]
    sentences: list[Sentence] = field(default_factory=list)

    def section(self, name: str) -> list[Sentence]:
        """The sentences of one section (by name), in order."""
        return [s for s in self.sentences if s.section == name]


def read_report(text: str) -> Report:
    """Sections and sentences of a report's text.

    Raises:
        PatientError: the text is empty, longer than MAX_REPORT_CHARS or has more than MAX_SENTENCES.

    Example:
        >>> report = read_report("FINDINGS: No pleural effusion. A 4 mm nodule.\\nIMPRESSION: Stable.")
        >>> [(s.section, s.text) for s in report.sentences]
        [('findings', 'No pleural effusion.'), ('findings', 'A 4 mm nodule.'), ('impression', 'Stable.')]
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")  # lone surrogates: U+FFFD
    if not text.strip():
        raise PatientError("the report is empty: paste its text or give a .txt or .pdf file")
    if len(text) > MAX_REPORT_CHARS:
        raise PatientError(f"the report has {len(text):,} characters; the most read is {MAX_REPORT_CHARS:,}")
    sections = _sections(text)
    sentences: list[Sentence] = []
    for section, body_start in sections:
        for start, end in _sentence_spans(text, body_start, section.end):
            sentences.append(Sentence(len(sentences), section.name, text[start:end], start, end))
    if len(sentences) > MAX_SENTENCES:
        raise PatientError(f"the report has {len(sentences):,} sentences; the most read is {MAX_SENTENCES:,} (a chest "
                           "scan report has well under 100)")
    return Report(text, [s for s, _ in sections], sentences)


def load_report(path: Path) -> Report:
    """A report from a `.txt` file or a PDF with a text layer.

    Raises:
        PatientError: no such file, not text, a PDF without text (a scan), or an unreadable PDF.
    """
    if not path.is_file():
        raise PatientError(f"report not found: {path}")
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise PatientError(f"{path} is {path.stat().st_size / 1e6:.1f} MB; a report file may be at most "
                               f"{MAX_FILE_BYTES // 1_000_000} MB")
        data = path.read_bytes()
    except OSError as err:
        raise PatientError(f"cannot read {path}: {err.strerror or err}") from err
    return read_report_bytes(data, str(path))


def read_report_bytes(data: bytes, name: str) -> Report:
    """A report from a file's bytes (a PDF when they start like one, else UTF-8 text); `name` is only
    for messages (an upload's bytes are read in memory, never written to disk).

    Raises:
        PatientError: not text, a PDF without text (a scan), or an unreadable PDF.
    """
    return read_report(report_text(data, name))


def report_text(data: bytes, name: str) -> str:
    """The text of a report file's bytes: a PDF's text layer, else the bytes as UTF-8.

    Raises:
        PatientError: as `read_report_bytes`.
    """
    if data[:5] == b"%PDF-":
        return _pdf_text(name, data)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise PatientError(f"{name} is not a text file (UTF-8) or a PDF") from err


def _pdf_text(path: str, data: bytes) -> str:
    """The text of a PDF's pages, read under limits a report never reaches: a PDF made to expand (one
    small stream shared by thousands of pages, a stream that inflates to gigabytes) is refused early."""
    import io

    from pypdf import PdfReader, apply_configuration
    from pypdf.errors import PdfReadError

    pages: list[str] = []
    # Any: the keys are Configuration fields, not the function's own `configuration` parameter
    limits: dict[str, Any] = {f"{kind}_maximum_output_length": MAX_PDF_STREAM for kind in
                              ("zlib", "lzw", "run_length", "jbig2", "brotli", "array_based_stream")}
    try:
        with apply_configuration(**limits):
            reader = PdfReader(io.BytesIO(data))
            if len(reader.pages) > MAX_PDF_PAGES:
                raise PatientError(f"{path} has {len(reader.pages):,} pages; a report PDF may have at most "
                                   f"{MAX_PDF_PAGES}: copy the report's text instead")
            drawn = chars = 0
            for page in reader.pages:
                contents = page.get_contents()
                drawn += len(contents.get_data()) if contents is not None else 0
                if drawn > MAX_PDF_DRAWING:
                    raise PatientError(f"{path} holds far more drawing than a report's text: copy the report's "
                                       "text instead")
                pages.append(page.extract_text() or "")
                chars += len(pages[-1])
                if chars > MAX_REPORT_CHARS:
                    raise PatientError(f"{path} holds more than {MAX_REPORT_CHARS:,} characters of text; the most "
                                       f"read is {MAX_REPORT_CHARS:,}")
    except PatientError:
        raise
    except PdfReadError as err:
        raise PatientError(f"cannot read {path} as a PDF: {err}") from err
    except Exception as err:  # noqa: BLE001 - a malformed or encrypted PDF breaks pypdf in many ways
        raise PatientError(f"cannot read {path} as a PDF ({type(err).__name__}); copy the report's text "
                           "instead") from err
    text = "\n".join(pages)
    if not text.strip():
        raise PatientError(f"{path} holds no text (a scanned PDF?): copy the report's text, or give a .txt")
    return text


def _sections(text: str) -> list[tuple[Section, int]]:
    """Each section with where its body starts; text before the first heading is a "report" section."""
    found = []  # (name, heading, start, body start)
    offset = 0
    for line in text.split("\n"):
        stripped = line.strip()
        colon = _WITH_COLON.match(line)
        word = " ".join((colon["word"] if colon else stripped).lower().split())
        if colon and word.removeprefix("final report ") in _HEADING_WORDS:
            found.append((_HEADING_WORDS[word.removeprefix("final report ")], colon["word"].strip(), offset,
                          offset + colon.end()))
        elif not colon and word in _HEADING_WORDS and (stripped.isupper() or stripped.istitle()):
            found.append((_HEADING_WORDS[word], stripped, offset, offset + len(line)))
        offset += len(line) + 1
    if not found:
        return [(Section("report", "", 0, len(text)), 0)]
    sections = []
    if text[: found[0][2]].strip():
        sections.append((Section("report", "", 0, found[0][2]), 0))
    for i, (name, heading, start, body) in enumerate(found):
        end = found[i + 1][2] if i + 1 < len(found) else len(text)
        sections.append((Section(name, heading, start, end), body))
    return sections


def _sentence_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """(start, end) of each sentence in text[start:end]: blocks (paragraphs, list items) first, then
    sentence ends inside each; list numbers and surrounding space are left out."""
    blocks, begin = [], start
    for match in _BLOCK.finditer(text, start, end):
        blocks.append((begin, match.start()))
        begin = match.end()
    blocks.append((begin, end))
    spans = []
    for block_start, block_end in blocks:
        item = _ITEM.match(text, block_start, block_end)
        first = item.end() if item else block_start
        for match in _BOUNDARY.finditer(text, first, block_end):
            word = text[first: match.start() + 1].rsplit(None, 1)[-1].lower()
            if word in _ABBREVIATIONS:
                continue
            spans.append((first, match.start() + len(match.group().rstrip())))
            first = match.end()
        spans.append((first, block_end))
    cleaned = []
    for s, e in spans:
        piece = text[s:e]
        s += len(piece) - len(piece.lstrip())
        e = s + len(text[s:e].rstrip())
        if re.search(r"[A-Za-z0-9]", text[s:e]):
            cleaned.append((s, e))
    return cleaned
