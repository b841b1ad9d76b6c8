"""Causal-LM loss with the LM head run only over the columns that carry loss.

On the bundled model the head (49,152 x 576) is about a fifth of the forward FLOPs and cannot be
dropped by DropBP. Batches are left-padded, so every labelled token sits in the last K columns;
`logits_to_keep=K` makes the model apply its head (and any model-specific logit processing) there
only. With short answers after long prompts, as in SERSAL's reverse tuning, K is a few tokens.
"""

from __future__ import annotations

import torch
from torch import nn

from verticals.finetune.data import IGNORE


def columns_with_loss(labels: torch.Tensor) -> int:
    """How many right-most columns hold every position whose next token carries loss (plus one)."""
    carries = (labels[:, 1:] != IGNORE).any(dim=0)
    if not carries.any():
        return 1
    first = int(carries.nonzero()[0])  # first position (in label coordinates shifted by one)
    return labels.shape[1] - first


def lm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Mean cross-entropy over labelled tokens, and the number of labelled tokens."""
    labels = batch["labels"]
    keep = columns_with_loss(labels)
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                position_ids=batch["position_ids"], logits_to_keep=keep, use_cache=False)
    logits = out.logits[:, -keep:-1] if keep > 1 else out.logits[:, :0]
    targets = labels[:, labels.shape[1] - keep + 1 :]
    count = int((targets != IGNORE).sum())
    if count == 0:
        return logits.sum() * 0.0, 0
    loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                                       ignore_index=IGNORE)
    return loss, count
