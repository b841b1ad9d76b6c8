"""Supervised fine-tuning of a `LocalModel` (LoRA or full), with DropBP built in.

Example:
    >>> from verticals.finetune import FinetuneConfig, finetune            # doctest: +SKIP
    >>> finetune(LocalModel.bundled(), "chats.jsonl", "runs/tuned",
    ...          FinetuneConfig(steps=300, drop_rate=0.5))                 # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from verticals.finetune.config import FinetuneConfig, FinetuneError

if TYPE_CHECKING:
    from verticals.finetune.check import check_dropbp
    from verticals.finetune.data import example_lengths, tokenize
    from verticals.finetune.train import FinetuneResult, finetune, trainable

__all__ = ["FinetuneConfig", "FinetuneError", "FinetuneResult", "check_dropbp", "example_lengths", "finetune",
           "tokenize", "trainable"]


def __getattr__(name: str) -> Any:
    # torch loads only when training is asked for (keeps `verticals --help` fast)
    if name in ("FinetuneResult", "finetune", "trainable"):
        return getattr(importlib.import_module("verticals.finetune.train"), name)
    if name == "check_dropbp":  # DropBP's gradient fidelity on this model and data, before a run
        return getattr(importlib.import_module("verticals.finetune.check"), name)
    if name in ("tokenize", "example_lengths"):  # how an example is tokenised for training, to check its length
        return getattr(importlib.import_module("verticals.finetune.data"), name)
    raise AttributeError(f"module 'verticals.finetune' has no attribute {name!r}")
