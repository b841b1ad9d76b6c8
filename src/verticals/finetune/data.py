"""Training examples from JSONL: chat examples (loss on assistant tokens only) or plain text.

Each line is `{"messages": [{"role": ..., "content": ...}, ...]}` or `{"text": "..."}`. Batches
are left-padded, so the tokens that carry loss sit at the right edge of every row and the LM head
can run only over the last columns (see `loss.py`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from verticals.finetune.config import FinetuneError

IGNORE = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]

    @property
    def has_loss(self) -> bool:
        """Whether any token carries loss (a conversation whose last reply did not fit has none)."""
        return any(label != IGNORE for label in self.labels)


#: the chat roles a chat template knows
ROLES = {"system", "user", "assistant"}


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Records of a JSONL file, each checked to be a chat example or a text example."""
    path = Path(path)
    if not path.is_file():
        raise FinetuneError(f"training data not found: {path}")
    records = []
    for number, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise FinetuneError(f"{path}:{number} is not UTF-8 text (byte {raw[err.start]:#04x}); save the file as "
                                "UTF-8") from None
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise FinetuneError(f"{path}:{number} is not JSON: {err.msg}") from err
        if not isinstance(record, dict) or not (_is_chat(record) or isinstance(record.get("text"), str)):
            raise FinetuneError(f"{path}:{number} needs a 'messages' list with an assistant turn, or a 'text'")
        roles = {m["role"] for m in record.get("messages", [])} - ROLES
        if roles:
            raise FinetuneError(f"{path}:{number} has a message of role {sorted(roles)[0]!r}; roles are "
                                f"{', '.join(sorted(ROLES))}")
        records.append(record)
    if not records:
        raise FinetuneError(f"{path} holds no examples")
    return records


def _is_chat(record: dict[str, Any]) -> bool:
    messages = record.get("messages")
    return (isinstance(messages, list) and any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages)
            and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages))


def tokenize(record: dict[str, Any], tokenizer: Any, max_length: int) -> Example:
    """Token ids and labels; only assistant replies (chat) or every token (text) carry loss.

    A conversation longer than `max_length` loses its beginning, never its end: the last reply is
    what the example teaches. A reply cut at its start carries no loss (half a reply is not one), so
    a conversation whose last reply alone is longer than `max_length` has no loss tokens left
    (`has_loss` is false): the caller leaves it out and counts it. A text example is cut at its end.
    """
    if "messages" in record:
        ids, labels, replies = _tokenize_chat(record["messages"], tokenizer)
        cut = max(0, len(ids) - max_length)
        for start, end in replies:
            if start < cut:
                labels[start:end] = [IGNORE] * (end - start)
        return Example(ids[cut:], labels[cut:])
    ids = list(tokenizer(record["text"], add_special_tokens=False)["input_ids"])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return Example(ids[:max_length], list(ids[:max_length]))


def example_lengths(model: Any, records: list[dict[str, Any]]) -> list[int]:
    """Each example's whole length in tokens as `finetune` tokenises it for `model` (a `LocalModel`):
    to choose `max_length`, or to leave out beforehand what would not fit."""
    return [len(tokenize(r, model.tokenizer, sys.maxsize).input_ids) for r in records]


def _tokenize_chat(messages: list[dict[str, str]], tokenizer: Any) -> tuple[list[int], list[int],
                                                                          list[tuple[int, int]]]:
    if not tokenizer.chat_template:
        return _tokenize_transcript(messages, tokenizer)
    def render(upto: int, generation_prompt: bool) -> list[int]:
        text = tokenizer.apply_chat_template(messages[:upto], add_generation_prompt=generation_prompt, tokenize=False)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    ids = render(len(messages), False)
    labels = [IGNORE] * len(ids)
    replies = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start, end = len(render(i, True)), len(render(i + 1, False))
        if ids[:end] != render(i + 1, False)[:end]:
            raise FinetuneError("the chat template does not render conversations prefix by prefix; "
                                "cannot tell which tokens are the assistant's")
        labels[start:end] = ids[start:end]
        replies.append((start, end))
    return ids, labels, replies


def collate(examples: list[Example], pad_id: int) -> dict[str, torch.Tensor]:
    """Left-padded `input_ids`, `attention_mask`, `position_ids` and `labels`."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        ids[row, width - n :] = torch.tensor(example.input_ids)
        labels[row, width - n :] = torch.tensor(example.labels)
        mask[row, width - n :] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": positions, "labels": labels}


def _tokenize_transcript(messages: list[dict[str, str]], tokenizer: Any) -> tuple[list[int], list[int],
                                                                                list[tuple[int, int]]]:
    """A base model without a chat template: the plain transcript `LocalModel` prompts it with
    ("user: ...\nassistant: "), tokenised piece by piece so a reply's tokens are exactly its own;
    a reply ends with the end-of-sequence token, which carries loss (the model learns to stop)."""
    def encode(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    ids: list[int] = []
    labels: list[int] = []
    replies = []
    for message in messages:
        if message["role"] != "assistant":  # one piece, as the prompt's transcript is tokenised
            turn = encode(f"{message['role']}: {message['content']}\n")
            ids += turn
            labels += [IGNORE] * len(turn)
            continue
        head = encode("assistant: ")
        body = encode(message["content"]) + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
        ids += head
        labels += [IGNORE] * len(head)
        replies.append((len(ids), len(ids) + len(body)))
        ids += body
        labels += body
        newline = encode("\n")
        ids += newline
        labels += [IGNORE] * len(newline)
    return ids, labels, replies
