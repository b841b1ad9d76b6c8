"""Reading an uploaded report file without letting it hold the server.

A text file is decoded in place. A PDF is read in a child process with a deadline and a memory
cap: a PDF can be built to make a reader work for hours (a small form drawn thousands of times, a
stream that inflates to gigabytes), and no limit inside the reader covers every such shape. One PDF
is read at a time; the child is killed at the deadline and the person is told to paste the text.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing.connection import Connection

from verticals.patient.config import PatientError
from verticals.patient.report import report_text

#: seconds a PDF may take to read
PDF_SECONDS = 15.0
#: bytes of memory the reading process may use
PDF_MEMORY = 2 * 1024**3


def upload_text(data: bytes, name: str = "the file") -> str:
    """The text of an uploaded file.

    Raises:
        PatientError: not UTF-8 text or a readable PDF, or a PDF that takes longer than PDF_SECONDS.
    """
    if data[:5] != b"%PDF-":
        return report_text(data, name)
    context = multiprocessing.get_context("spawn")  # not fork: the server has threads and a model
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_read_pdf, args=(data, name, send), daemon=True)
    child.start()
    send.close()
    try:
        if not receive.poll(PDF_SECONDS):
            raise PatientError(f"{name} took longer than {PDF_SECONDS:g} s to read as a PDF: copy the report's "
                               "text instead")
        kind, value = receive.recv()
    except EOFError as err:  # the child died: the memory cap, or a crash inside the PDF reader
        raise PatientError(f"{name} could not be read as a PDF: copy the report's text instead") from err
    finally:
        receive.close()
        if child.is_alive():
            child.kill()
        child.join(5)
    if kind == "error":
        raise PatientError(value)
    return str(value)


def _read_pdf(data: bytes, name: str, send: Connection) -> None:
    import logging
    import resource
    import warnings

    resource.setrlimit(resource.RLIMIT_AS, (PDF_MEMORY, PDF_MEMORY))
    logging.disable(logging.CRITICAL)  # the reader's warnings quote the file: they must not reach the server's log
    warnings.simplefilter("ignore")
    try:
        send.send(("text", report_text(data, name)))
    except PatientError as err:
        send.send(("error", str(err)))
    finally:
        send.close()
