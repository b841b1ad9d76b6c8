"""`check_dropbp`: how faithful DropBP's gradient is on this model and these examples, before renting GPUs."""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any

from verticals import dropbp
from verticals.finetune.config import FinetuneConfig, FinetuneError
from verticals.finetune.data import collate, read_jsonl, tokenize
from verticals.finetune.loss import lm_loss
from verticals.finetune.train import micro_batches, trainable


def check_dropbp(model: Any, data: str | Path | list[dict[str, Any]], config: FinetuneConfig | None = None, *,
                 batches: int = 2, masks: int = 2, rates: tuple[float, ...] = dropbp.GRID,
                 min_cosine: float = dropbp.MIN_COSINE) -> dropbp.Fidelity:
    """Measure DropBP's gradient against the full gradient on `batches` micro-batches of `data`, as
    `finetune(model, data, ..., config)` would train them (LoRA per `config`, at its initialisation).

    The cost is `batches` x (1 + len(rates) x (1 + masks)) forward and backward passes. `model` (a
    `LocalModel`) is left as it is: the check runs on a fresh copy of its weights (open it with
    `lazy=True` and only the copy is ever loaded).

    Raises:
        FinetuneError: bad data, or no example that fits `config.max_length`.
        DropBPError: a model whose decoder branches cannot be found.
    """
    import torch

    config = config or FinetuneConfig()
    records = data if isinstance(data, list) else read_jsonl(data)
    model = model.copy_for_tuning()
    examples = [e for e in (tokenize(r, model.tokenizer, config.max_length) for r in records) if e.has_loss]
    if not examples:
        raise FinetuneError(f"none of the {len(records)} examples fits in max_length {config.max_length} with its "
                            "whole reply")
    if batches < 1:
        raise FinetuneError(f"batches should be at least 1, got {batches}")
    network = trainable(model.model, config)
    device = next(network.parameters()).device
    pad = model.tokenizer.pad_token_id or 0
    probes = [{k: v.to(device) for k, v in collate(b, pad).items()}
              for b in islice(micro_batches(examples, config, 0), batches)]
    controller = dropbp.apply(network, drop_rate=0.0, seq_len=config.max_length, seed=config.seed)
    try:
        with torch.random.fork_rng(devices=[]):
            return dropbp.check_fidelity(controller, lambda b: lm_loss(network, b)[0], probes, rates=rates,
                                         masks=masks, min_cosine=min_cosine, seed=config.seed)
    finally:
        controller.remove()
