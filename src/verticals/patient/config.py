"""`PatientError`: the report or the question cannot be used as given (one line for the person)."""

from __future__ import annotations


class PatientError(ValueError):
    """A report, question or setting the assistant cannot use: missing, empty, too long, unreadable."""
