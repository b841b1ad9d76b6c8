"""Atomic file writes, for every system: an output appears whole or not at all, so a killed run never
leaves (or later reads) half a file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def write_text(file: Path, text: str) -> None:
    """Write `text` (UTF-8) to `file` through a temporary name and a rename."""
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, file)


def write_bytes(file: Path, data: bytes) -> None:
    """Write `data` to `file` through a temporary name and a rename."""
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(file.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, file)


def write_json(file: Path, value: Any) -> None:
    """Write `value` as indented JSON with sorted keys (readable, and the same bytes for the same value)."""
    write_text(file, json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def write_array(file: Path, value: np.ndarray) -> None:
    """Save an array as `.npy` (never pickled; read back with `allow_pickle=False`)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(file.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, value, allow_pickle=False)
    os.replace(tmp, file)
