"""Step 4 of SERSAL: reverse tuning. The small model's confident rows, labelled by it, teach the LLM.

Examples use the same prompt as annotation, answered with the first or second choice ("Yes"/"No").
Classes are balanced (a tuned LLM that learned "always No" would be no better). A local model is
tuned with LoRA through `verticals.finetune`, DropBP on; for a hosted model we write the JSONL its
fine-tuning API takes and say how to submit it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from verticals.serval._io import write_text
from verticals.serval.datasets import TabularData
from verticals.serval.prompts import PromptTemplate, questions

MIN_PER_CLASS = 4
MAX_EPOCHS = 3


@dataclass(frozen=True)
class TuningSet:
    """The chosen rows, their labels from the small model, and whether the threshold had to be relaxed."""

    rows: np.ndarray
    labels: np.ndarray
    relaxed: bool


def confident_rows(probs: np.ndarray, rows: np.ndarray, *, confidence: float, limit: int,
                   seed: int = 0) -> TuningSet:
    """Up to `limit` rows, half per class, where the small model is at least `confidence` sure.

    When a class has fewer than `MIN_PER_CLASS` such rows, the top and bottom rows by rank stand for
    the two classes instead (`relaxed`: the small model's ranking is taught, not its calibration), so
    both answers are always taught.
    """
    rng = np.random.default_rng(seed)
    p = probs[rows]
    half = max(limit // 2, 1)
    positive, negative = rows[p >= confidence], rows[p <= 1 - confidence]
    relaxed = min(len(positive), len(negative)) < MIN_PER_CLASS
    if relaxed:
        order = rows[np.argsort(p)]
        take = max(min(half, len(rows) // 4), 1)
        positive, negative = order[-take:], order[:take]
    n = min(len(positive), len(negative), half)
    chosen = np.concatenate([rng.choice(positive, n, replace=False), rng.choice(negative, n, replace=False)])
    labels = np.repeat(np.array([1, 0], dtype=np.int64), n)  # the side a row was drawn from, even when relaxed
    order = rng.permutation(len(chosen))
    return TuningSet(chosen[order], labels[order], relaxed)


def examples(data: TabularData, chosen: TuningSet, template: PromptTemplate, style: str) -> list[dict[str, Any]]:
    """Chat examples: the annotation prompt, answered by the small model's label."""
    chats = questions(data.subset(chosen.rows), template, style)
    return [{"messages": chat + [{"role": "assistant", "content": template.choices[0 if label else 1]}]}
            for chat, label in zip(chats, chosen.labels)]


def write_jsonl(records: list[dict[str, Any]], file: Path) -> None:
    """The examples in the chat fine-tuning format of OpenAI-compatible APIs."""
    write_text(file, "".join(json.dumps(r) + "\n" for r in records))


def hosted_instructions(file: Path, model_name: str) -> str:
    """How to submit the examples to a hosted fine-tuning API (we cannot tune a remote model ourselves)."""
    return (f"reverse-tuning examples for the hosted model are in {file}; submit them with e.g.\n"
            f"  openai api files.create -f {file} -p fine-tune\n"
            f"  openai api fine_tuning.jobs.create -t <file id> -m {model_name}\n"
            "then run again with --llm pointing at the tuned model to measure it")


def reverse_tune(model: Any, records: list[dict[str, Any]], out: Path, *, steps: int, batch_size: int, lr: float,
                 drop_rate: float, seed: int, progress: bool = True) -> Path:
    """LoRA-tune a `LocalModel` on `records` into `out` (resumable: a killed run continues).

    At most `MAX_EPOCHS` passes over the examples: with few confident rows, more steps only memorise them.
    """
    from verticals.finetune.checkpoint import latest_checkpoint
    from verticals.finetune.config import FinetuneConfig
    from verticals.finetune.train import finetune

    longest = max(len(model.prompt_ids(r["messages"])) for r in records) + 8
    steps = min(steps, max(math.ceil(MAX_EPOCHS * len(records) / batch_size), 1))  # few rows: do not memorise them
    config = FinetuneConfig(method="lora", steps=steps, batch_size=batch_size, lr=lr, warmup_steps=max(steps // 10, 1),
                            max_length=max(longest, 64), drop_rate=drop_rate, save_every=max(steps // 4, 1),
                            seed=seed)
    resume = latest_checkpoint(out / "checkpoints") is not None
    finetune(model, records, out, config, resume=resume, progress=progress)
    return out
