"""Models that several systems share, loaded lazily and once: the OCR that reads text in images
(GOAT's memes, image parts sent to `verticals llm serve`). Imports nothing else of ours.

Example:
    >>> from verticals.encoders import read_text                  # doctest: +SKIP
    >>> read_text(open("meme.png", "rb").read())                   # doctest: +SKIP
    'WHEN THE DOCTOR SAYS IT IS JUST A COLD'
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any


class EncoderError(ValueError):
    """A shared model could not be used as asked: it is not installed, or the input is not what it reads."""


if TYPE_CHECKING:
    from verticals.encoders.ocr import ocr_engine, read_text

__all__ = ["EncoderError", "ocr_engine", "read_text"]


def __getattr__(name: str) -> Any:
    # onnxruntime and OpenCV load only when text is first read
    if name in ("ocr_engine", "read_text"):
        return getattr(importlib.import_module("verticals.encoders.ocr"), name)
    raise AttributeError(f"module 'verticals.encoders' has no attribute {name!r}")
