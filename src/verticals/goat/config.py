"""`GoatError`, the one error of the GOAT-Bench harness: bad data, settings or run folder."""

from __future__ import annotations


class GoatError(ValueError):
    """A GOAT evaluation cannot start or go on as asked; the message says what to fix."""
