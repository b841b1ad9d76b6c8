"""Hand-built PDFs for the upload tests: a page of text, a page that draws one small form thousands
of times (cheap to send, slow to read), and a font whose Unicode map yields a lone surrogate."""

from __future__ import annotations

import zlib

HELVETICA = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica%s >>"
LONE_SURROGATE_CMAP = b"""/CIDInit /ProcSet findresource begin 12 dict begin begincmap /CMapName /T def /CMapType 2 def
1 begincodespacerange <00> <FF> endcodespacerange
1 beginbfchar <41> <D800> endbfchar
endcmap CMapName currentdict /CMap defineresource pop end end"""


def _stream(data: bytes, extra: bytes = b"") -> bytes:
    packed = zlib.compress(data, 9)
    return b"<< /Length %d /Filter /FlateDecode%s >>\nstream\n" % (len(packed), extra) + packed + b"\nendstream"


def pdf(objects: list[bytes]) -> bytes:
    """A PDF of these objects (numbered from 1; 1 is the catalog), with its cross-reference table."""
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    return out + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)


def _page(content: bytes, font: bytes = HELVETICA % b"", xobject: bytes | None = None) -> bytes:
    forms = b" /XObject << /X1 6 0 R >>" if xobject is not None else b""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [5 0 R] /Count 1 >>", font,
               _stream(content),
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >>"
               + forms + b" >> /Contents 4 0 R >>"]
    if xobject is not None:
        objects.append(_stream(xobject, b" /Type /XObject /Subtype /Form /BBox [0 0 612 792] "
                                        b"/Resources << /Font << /F1 3 0 R >> >>"))
    return pdf(objects)


def text_pdf(text: str) -> bytes:
    return _page(b"BT /F1 12 Tf 10 700 Td (" + text.encode("latin-1") + b") Tj ET")


def form_bomb_pdf(draws: int = 5000, spaces: int = 2000) -> bytes:
    """Under 2 kB: one form of `spaces` shown spaces, drawn `draws` times."""
    return _page(b"/X1 Do " * draws, xobject=b"BT /F1 12 Tf 10 10 Td " + b"( ) Tj " * spaces + b"ET")


def lone_surrogate_pdf() -> bytes:
    font = HELVETICA % b" /ToUnicode 6 0 R"
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [5 0 R] /Count 1 >>", font,
               _stream(b"BT /F1 12 Tf 10 700 Td (FINDINGS: No pleural effusion ) Tj (A) Tj ET"),
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
               b"/Contents 4 0 R >>", _stream(LONE_SURROGATE_CMAP)]
    return pdf(objects)
