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

from verticals.files import write_text
from verticals.serval.config import ServalError
from verticals.serval.datasets import TabularData
from verticals.serval.prompts import PromptTemplate, questions

MAX_EPOCHS = 3


@dataclass(frozen=True)
class TuningSet:
    """The chosen rows and their labels from the small model (1: the first choice, "Yes")."""

    rows: np.ndarray
    labels: np.ndarray


def confident_rows(probs: np.ndarray, rows: np.ndarray, *, share: float, limit: int, seed: int = 0) -> TuningSet:
    """The top and bottom `share` of `rows` by the small model's score, up to `limit` rows, half per class.

    By rank, not by a probability threshold: a small model trained on ranks or on a weak LLM's labels
    gives compressed probabilities (UCI heart disease: 9 of 320 training rows at 0.8 or more), so a
    threshold would teach the LLM from a handful of rows. Under `limit`, the most extreme rows are
    taken; rows tied in score are ordered at random (seeded), not by their place in the table.
    """
    if len(rows) < 2:
        raise ServalError(f"reverse tuning needs at least 2 training rows, got {len(rows)}")
    rng = np.random.default_rng(seed)
    order = rows[np.lexsort((rng.random(len(rows)), probs[rows]))]  # ties broken at random, not by row order
    n = min(max(round(share * len(rows)), 1), max(limit // 2, 1), len(rows) // 2)
    chosen = np.concatenate([order[-n:], order[:n]])
    labels = np.repeat(np.array([1, 0], dtype=np.int64), n)
    shuffle = rng.permutation(len(chosen))
    return TuningSet(chosen[shuffle], labels[shuffle])


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
                 drop_rate: float | str, seed: int, progress: bool = True) -> str:
    """LoRA-tune a `LocalModel` on `records` into `out` (resumable: a killed run continues); returns what
    DropBP's `auto` measured and chose, in words ("" for a fixed rate).

    At most `MAX_EPOCHS` passes over the examples: with few confident rows, more steps only memorise them.
    """
    from verticals.finetune import FinetuneConfig, example_lengths, finetune

    longest = max(example_lengths(model, records))
    steps = min(steps, max(math.ceil(MAX_EPOCHS * len(records) / batch_size), 1))  # few rows: do not memorise them
    config = FinetuneConfig(method="lora", steps=steps, batch_size=batch_size, lr=lr, warmup_steps=max(steps // 10, 1),
                            max_length=max(longest, 64), drop_rate=drop_rate, save_every=max(steps // 4, 1),
                            seed=seed)
    result = finetune(model, records, out, config, resume=True, progress=progress)  # continues a killed run
    return result.dropbp
