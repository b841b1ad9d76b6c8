"""Atomic file writes: a stage's output appears whole or not at all, so a killed run never reads half a file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def write_text(file: Path, text: str) -> None:
    """Write `text` to `file` through a temporary name and a rename."""
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, file)


def write_array(file: Path, value: np.ndarray) -> None:
    """Save an array as `.npy` (never pickled; read back with `allow_pickle=False`)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(file.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, value, allow_pickle=False)
    os.replace(tmp, file)
