"""Models that several systems share, loaded lazily and once: the OCR that reads text in images
(GOAT's memes, image parts sent to `verticals llm serve`), the MiniLM sentence encoder (GOAT's
fusion baseline, the patient assistant) and the Open-NSFW picture features (GOAT's fusion).
Imports nothing else of ours.

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
    from verticals.encoders.image import image_encoder_name, image_features
    from verticals.encoders.ocr import character_error_rate, ocr_engine, read_text
    from verticals.encoders.text import embed_texts, text_encoder_name

__all__ = ["EncoderError", "character_error_rate", "embed_texts", "image_encoder_name", "image_features",
           "ocr_engine", "read_text", "text_encoder_name"]

_LAZY = {"character_error_rate": "ocr", "ocr_engine": "ocr", "read_text": "ocr", "image_encoder_name": "image",
         "image_features": "image", "embed_texts": "text", "text_encoder_name": "text"}


def __getattr__(name: str) -> Any:
    # onnxruntime, OpenCV and sentence-transformers load only when first used
    if name in _LAZY:
        return getattr(importlib.import_module(f"verticals.encoders.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'verticals.encoders' has no attribute {name!r}")
