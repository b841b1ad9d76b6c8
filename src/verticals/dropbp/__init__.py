"""DropBP: skip the backward pass of residual branches at random; the forward pass stays exact.

Woo et al., "DropBP: Accelerating Fine-Tuning of Large Language Models by Dropping Backward
Propagation" (NeurIPS 2024, https://arxiv.org/abs/2402.17812). Depends on torch alone (the
Trainer callback imports transformers only when used), and imports torch only when a name
other than the config is first used.

Example:
    >>> from verticals import dropbp                                  # doctest: +SKIP
    >>> controller = dropbp.apply(model, drop_rate=0.5)                # doctest: +SKIP
    >>> controller.calibrate(lambda b: model(**b).loss, probe_batches)  # doctest: +SKIP
    >>> controller.remove()                                            # doctest: +SKIP

Before a run, on your own model and batches: how faithful is the DropBP gradient at each rate?
    >>> print(dropbp.check_fidelity(controller, loss_fn, batches).table())   # doctest: +SKIP
    >>> dropbp.apply(model, drop_rate="auto")   # measures at calibrate(), then trains at the rate chosen
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from verticals.dropbp.config import MIN_COSINE, DropBPConfig, DropBPError

if TYPE_CHECKING:
    from verticals.dropbp.allocation import allocate, measure_sensitivity
    from verticals.dropbp.branch import Branch
    from verticals.dropbp.callback import DropBPCallback
    from verticals.dropbp.fidelity import GRID, Fidelity, RateFidelity, check_fidelity, expected_cosine
    from verticals.dropbp.model import DropBP, apply, find_branches

_LAZY = {
    "allocate": "verticals.dropbp.allocation",
    "measure_sensitivity": "verticals.dropbp.allocation",
    "Branch": "verticals.dropbp.branch",
    "DropBPCallback": "verticals.dropbp.callback",
    "GRID": "verticals.dropbp.fidelity",
    "Fidelity": "verticals.dropbp.fidelity",
    "RateFidelity": "verticals.dropbp.fidelity",
    "check_fidelity": "verticals.dropbp.fidelity",
    "expected_cosine": "verticals.dropbp.fidelity",
    "DropBP": "verticals.dropbp.model",
    "apply": "verticals.dropbp.model",
    "find_branches": "verticals.dropbp.model",
}

__all__ = ["GRID", "MIN_COSINE", "Branch", "DropBP", "DropBPCallback", "DropBPConfig", "DropBPError", "Fidelity",
           "RateFidelity", "allocate", "apply", "check_fidelity", "expected_cosine", "find_branches",
           "measure_sensitivity"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'verticals.dropbp' has no attribute {name!r}")
