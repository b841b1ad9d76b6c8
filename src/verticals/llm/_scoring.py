"""Score fixed answer options with one batched forward pass per batch.

Why this shape: a Yes/No annotation of thousands of rows spends almost all its time in the
prompt. So (1) the token prefix shared by all prompts (system prompt, instruction) is run once
and its key/value cache reused by every batch; (2) each row holds its own prompt suffix followed
by every choice's tokens but the last as separate branches ("tree attention": a branch sees the
prompt and its own earlier tokens, never another branch), so multi-token choices cost one pass;
(3) rows are left-padded so that all positions whose logits are read sit in the last K columns,
and the LM head runs only there (`logits_to_keep=K`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import torch
from transformers import DynamicCache


def common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix shared by every row."""
    first = rows[0]
    length = min(len(r) for r in rows)
    for row in rows[1:]:
        i = 0
        while i < length and row[i] == first[i]:
            i += 1
        length = i
    return length


def pack_batches(lengths: Sequence[int], extra: int, max_batch_tokens: int) -> list[list[int]]:
    """Group row indices, shortest first, so that rows x padded length stays under the budget."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[i] + extra
        if current and (len(current) + 1) * width > max_batch_tokens:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


@torch.inference_mode()
def choice_logprobs(model: torch.nn.Module, rows: Sequence[Sequence[int]], choices: Sequence[Sequence[int]], *,
                    max_batch_tokens: int = 2048) -> tuple[np.ndarray, int]:
    """Log-probability of each choice's token sequence after each row of prompt tokens.

    Args:
        model: a causal LM accepting `attention_mask` (4-D), `position_ids`, `past_key_values`
            and `logits_to_keep`, as Hugging Face decoders do.
        rows: prompt token ids, one list per prompt (each at least one token).
        choices: token ids of each answer option (each at least one token).
        max_batch_tokens: rows x padded length per forward pass.

    Returns:
        `(logprobs, tokens_computed)`: an `(n_rows, n_choices)` array of summed log-probabilities,
        and how many token positions went through the decoder (padding included).
    """
    device = next(model.parameters()).device
    branches = [list(c[:-1]) for c in choices]
    slots, offset = [], 1
    for c in choices:
        slots.append([0] + list(range(offset, offset + len(c) - 1)))
        offset += len(c) - 1
    keep = offset  # last suffix token + every branch token
    prefix = min(common_prefix_length(rows), min(len(r) for r in rows) - 1)
    computed = prefix
    prefix_kv = None
    if prefix > 0:
        out = model(input_ids=torch.tensor([list(rows[0][:prefix])], device=device), use_cache=True, logits_to_keep=1)
        prefix_kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
    suffixes = [list(r[prefix:]) for r in rows]
    result = np.zeros((len(rows), len(choices)), dtype=np.float64)
    targets = [torch.tensor(c, device=device) for c in choices]
    for batch in pack_batches([len(s) for s in suffixes], keep - 1, max_batch_tokens):
        # a Hugging Face model's `dtype` property; torch types a plain Module's attributes as Tensor | Module
        dtype = cast(torch.dtype, model.dtype)
        ids, positions, mask = _layout([suffixes[i] for i in batch], branches, prefix, device, dtype)
        computed += ids.numel()
        cache = None
        if prefix_kv is not None:
            size = len(batch)
            cache = DynamicCache(ddp_cache_data=[(k.expand(size, -1, -1, -1), v.expand(size, -1, -1, -1))
                                                 for k, v in prefix_kv])
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                    use_cache=cache is not None, logits_to_keep=keep)
        logp = torch.log_softmax(out.logits[:, -keep:].float(), dim=-1)
        for j, (slot, target) in enumerate(zip(slots, targets)):
            picked = logp[:, slot, :].gather(-1, target.expand(len(batch), -1).unsqueeze(-1)).squeeze(-1)
            result[batch, j] = picked.sum(-1).double().cpu().numpy()
    return result, computed


def _layout(suffixes: list[list[int]], branches: list[list[int]], prefix: int, device: torch.device,
            dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids, positions and additive 4-D mask for one batch (left padding, tree branches)."""
    width = max(len(s) for s in suffixes)
    n_branch = sum(len(b) for b in branches)
    length = width + n_branch
    ids = torch.zeros((len(suffixes), length), dtype=torch.long)
    positions = torch.zeros_like(ids)
    allowed = torch.zeros((len(suffixes), length, prefix + length), dtype=torch.bool)
    allowed[:, :, :prefix] = True
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    for b, suffix in enumerate(suffixes):
        pad, s = width - len(suffix), len(suffix)
        ids[b, pad:width] = torch.tensor(suffix)
        positions[b, pad:width] = torch.arange(prefix, prefix + s)
        allowed[b, pad:width, prefix + pad : prefix + width] = causal[:s, :s]
        for q in range(pad):  # padding rows attend to themselves only (keeps softmax finite)
            allowed[b, q, :] = False
            allowed[b, q, prefix + q] = True
        column = width
        for branch in branches:
            m = len(branch)
            if m == 0:
                continue
            ids[b, column : column + m] = torch.tensor(branch)
            positions[b, column : column + m] = torch.arange(prefix + s, prefix + s + m)
            allowed[b, column : column + m, prefix + pad : prefix + width] = True
            allowed[b, column : column + m, prefix + column : prefix + column + m] = torch.ones(m, m).tril().bool()
            column += m
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return ids.to(device), positions.to(device), mask.unsqueeze(1).to(device)
