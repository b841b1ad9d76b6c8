"""`FinetuneConfig`: settings of a supervised fine-tuning run, checked when built."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from verticals.dropbp import MIN_COSINE, DropBPConfig


class FinetuneError(ValueError):
    """A fine-tuning run cannot start or go on as asked (bad settings, data or checkpoint)."""


METHODS = ("lora", "full")
CONFIG_NAME = "finetune_config.json"


@dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune: method, optimisation, DropBP, checkpoints.

    Example:
        >>> FinetuneConfig(method="lora", drop_rate=0.5).lora_r
        8
    """

    method: str = field(default="lora", metadata={"help": "lora (adapters only) or full (every weight)"})
    steps: int = field(default=100, metadata={"help": "optimizer steps in all"})
    batch_size: int = field(default=4, metadata={"help": "examples per micro-batch"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    lr: float = field(default=2e-4, metadata={"help": "peak learning rate (AdamW, linear decay after warm-up)"})
    warmup_steps: int = field(default=10, metadata={"help": "learning-rate warm-up steps"})
    weight_decay: float = 0.0
    max_length: int = field(default=512, metadata={"help": "longest example in tokens (longer ones are cut)"})
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    drop_rate: float | str = field(default="auto", metadata={
        "help": "DropBP target drop rate; 0 turns DropBP off; 'auto' checks the gradient's fidelity first"})
    drop_allocation: str = field(default="uniform", metadata={"help": "uniform or sensitivity"})
    drop_schedule: str = field(default="constant", metadata={"help": "constant or linear"})
    drop_warmup_steps: int = 0
    drop_min_cosine: float = field(default=MIN_COSINE, metadata={
        "help": "auto: the cosine of the expected DropBP gradient with the full one it requires on every batch"})
    probe_batches: int = field(default=2, metadata={"help": "micro-batches used to measure DropBP sensitivity"})
    save_every: int = field(default=50, metadata={"help": "checkpoint every N optimizer steps"})
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.method in METHODS, f"`method` should be one of {METHODS}, got {self.method!r}"),
            (self.steps >= 1, f"`steps` should be at least 1, got {self.steps}"),
            (self.batch_size >= 1, f"`batch_size` should be at least 1, got {self.batch_size}"),
            (self.grad_accum >= 1, f"`grad_accum` should be at least 1, got {self.grad_accum}"),
            (self.lr > 0, f"`lr` should be positive, got {self.lr}"),
            (self.warmup_steps >= 0, f"`warmup_steps` should be >= 0, got {self.warmup_steps}"),
            (self.max_length >= 8, f"`max_length` should be at least 8, got {self.max_length}"),
            (self.lora_r >= 1, f"`lora_r` should be at least 1, got {self.lora_r}"),
            (self.probe_batches >= 1, f"`probe_batches` should be at least 1, got {self.probe_batches}"),
            (self.save_every >= 1, f"`save_every` should be at least 1, got {self.save_every}"),
        ]
        for ok, message in checks:
            if not ok:
                raise FinetuneError(message)
        # DropBP's own checks (rate within the cap, allocation, schedule) before any model is loaded
        try:
            DropBPConfig(drop_rate=self.drop_rate, min_cosine=self.drop_min_cosine, allocation=self.drop_allocation,
                         schedule=self.drop_schedule, warmup_steps=self.drop_warmup_steps, seq_len=self.max_length,
                         seed=self.seed)
        except ValueError as err:  # a DropBPError, said as a setting of this run
            raise FinetuneError(f"drop rate settings: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, folder: Path) -> None:
        (folder / CONFIG_NAME).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, folder: Path) -> FinetuneConfig:
        data = json.loads((folder / CONFIG_NAME).read_text())
        known = {f.name for f in fields(cls)}
        data = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
        return cls(**data)
