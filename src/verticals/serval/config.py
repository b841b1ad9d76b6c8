"""`ServalConfig`: the settings of a SERSAL run, checked when built; `ServalError`, the part's one error."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


class ServalError(ValueError):
    """A SERSAL run cannot start or go on as asked (bad dataset, metadata, settings or run folder)."""


class TeacherCeilingError(ServalError):
    """A simulated annotator was asked for an AUC the table's features cannot support."""


ANNOTATIONS = ("logprobs", "verbalized", "vote")
SMALL_MODELS = ("ft_transformer", "boosted_trees")
STYLES = ("described", "plain")
TARGETS = ("rank", "raw")


@dataclass(frozen=True)
class ServalConfig:
    """How to run the loop: annotate, teach, check, reverse-tune, repeat.

    Example:
        >>> ServalConfig(loops=2).confident_share
        0.25
    """

    loops: int = field(default=1, metadata={"help": "annotate -> teach -> check -> reverse-tune rounds"})
    annotation: str = field(default="logprobs", metadata={"help": "logprobs, verbalized or vote"})
    votes: int = field(default=5, metadata={"help": "samples per row for annotation=vote"})
    style: str = field(default="described", metadata={"help": "described (names, units, meanings) or plain"})
    targets: str = field(default="rank", metadata={"help": "rank (the LLM's ranking, as quantiles) or raw (its "
                                                              "probabilities as they are)"})
    small_model: str = field(default="ft_transformer", metadata={"help": "ft_transformer or boosted_trees"})
    noisy: str = field(default="dividemix", metadata={"help": "dividemix or none"})
    epochs: int = field(default=100, metadata={"help": "most small-model epochs (early stopping ends sooner)"})
    test_fraction: float = field(default=0.2, metadata={"help": "rows held out for evaluation with gold labels"})
    max_rows: int = field(default=0, metadata={"help": "use a random subset of this many rows (0 = all)"})
    confident_share: float = field(default=0.25, metadata={"help": "share of training rows at each end of the small "
                                                                     "model's ranking that teach the LLM"})
    tune_examples: int = field(default=400, metadata={"help": "most reverse-tuning examples (balanced by class)"})
    tune_steps: int = field(default=60, metadata={"help": "LoRA steps of reverse tuning"})
    tune_batch_size: int = 4
    tune_lr: float = 3e-4
    drop_rate: float | str = field(default="auto", metadata={
        "help": "DropBP rate while reverse-tuning (0 = off; auto = the highest rate whose gradient stays faithful)"})
    min_agreement: float = field(default=0.55, metadata={"help": "gate: least small-model vs LLM AUC (check split)"})
    max_unreadable: float = field(default=0.1, metadata={"help": "stop when more than this share of rows get no "
                                                                  "readable answer from the LLM"})
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.loops >= 1, f"`loops` should be at least 1, got {self.loops}"),
            (self.annotation in ANNOTATIONS, f"`annotation` should be one of {ANNOTATIONS}, got {self.annotation!r}"),
            (self.votes >= 2, f"`votes` should be at least 2, got {self.votes}"),
            (self.style in STYLES, f"`style` should be one of {STYLES}, got {self.style!r}"),
            (self.targets in TARGETS, f"`targets` should be one of {TARGETS}, got {self.targets!r}"),
            (self.small_model in SMALL_MODELS,
             f"`small_model` should be one of {SMALL_MODELS}, got {self.small_model!r}"),
            (self.noisy in ("dividemix", "none"), f"`noisy` should be dividemix or none, got {self.noisy!r}"),
            (self.epochs >= 1, f"`epochs` should be at least 1, got {self.epochs}"),
            (0.05 <= self.test_fraction <= 0.5, f"`test_fraction` should be in [0.05, 0.5], got {self.test_fraction}"),
            (self.max_rows == 0 or self.max_rows >= 50, f"`max_rows` should be 0 or at least 50, got {self.max_rows}"),
            (0 < self.confident_share <= 0.5,
             f"`confident_share` should be in (0, 0.5], got {self.confident_share}"),
            (self.tune_examples >= 2, f"`tune_examples` should be at least 2, got {self.tune_examples}"),
            (self.tune_steps >= 1, f"`tune_steps` should be at least 1, got {self.tune_steps}"),
            (self.tune_batch_size >= 1, f"`tune_batch_size` should be at least 1, got {self.tune_batch_size}"),
            (self.tune_lr > 0, f"`tune_lr` should be positive, got {self.tune_lr}"),
            (0.5 <= self.min_agreement < 1, f"`min_agreement` should be in [0.5, 1), got {self.min_agreement}"),
            (0 <= self.max_unreadable < 1, f"`max_unreadable` should be in [0, 1), got {self.max_unreadable}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ServalError(message)
        if self.drop_rate != 0:  # DropBP's own limits now, not after an hour of annotation
            from verticals.dropbp import DropBPConfig, DropBPError

            try:
                DropBPConfig(drop_rate=self.drop_rate)
            except DropBPError as err:
                raise ServalError(f"--drop-rate: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServalConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def dumps(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def load(cls, file: Path) -> ServalConfig:
        return cls.from_dict(json.loads(file.read_text()))
