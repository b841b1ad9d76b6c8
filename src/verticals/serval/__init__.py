"""SERSAL (Yan et al., ICLR 2025, arXiv 2403.01570): label-free medical prediction.

An LLM's zero-shot soft labels teach a small tabular model (FT-Transformer, noisy-label learning);
the small model's confident outputs reverse-tune the LLM; repeat.

Example:
    >>> from verticals.serval import ServalConfig, sersal                      # doctest: +SKIP
    >>> sersal("heart_disease", "bundled", "runs/heart", ServalConfig())       # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from verticals.serval.config import ServalConfig, ServalError

if TYPE_CHECKING:
    from verticals.serval.datasets import list_datasets, load_dataset
    from verticals.serval.pipeline import sersal

__all__ = ["ServalConfig", "ServalError", "list_datasets", "load_dataset", "sersal"]

_LAZY = {"list_datasets": "datasets", "load_dataset": "datasets", "sersal": "pipeline"}


def __getattr__(name: str) -> Any:
    # pandas, torch and scikit-learn load only when used (keeps `verticals --help` fast)
    if name in _LAZY:
        return getattr(importlib.import_module(f"verticals.serval.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'verticals.serval' has no attribute {name!r}")
