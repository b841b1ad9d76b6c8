"""`DropBPConfig`: the settings of DropBP, checked when built (bad values fail before any surgery)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


class DropBPError(ValueError):
    """DropBP cannot be applied as asked: bad settings, or a model whose branches cannot be found."""


ALLOCATIONS = ("uniform", "sensitivity")
#: `auto`'s threshold on the cosine of the expected DropBP gradient with the full gradient. On the bundled
#: 135M model (breast-cancer chats, 300 LoRA steps) the held-out loss gap to rate 0 was about 4 x (1 - cosine):
#: cosine 0.94-0.95 (rate 0.125) gave +20%, 0.81-0.83 (rate 0.25) +78% (docs/benchmarks.md); the issue's
#: 3% target then needs 0.992 or more. Two points on one model and task: a rule of thumb, stated as such.
MIN_COSINE = 0.992
SCHEDULES = ("constant", "linear")


@dataclass(frozen=True)
class DropBPConfig:
    """Settings of DropBP (Woo et al., 2024, https://arxiv.org/abs/2402.17812).

    Example:
        >>> DropBPConfig(drop_rate=0.5, allocation="sensitivity").cap
        0.9
    """

    drop_rate: float | str = field(default=0.5, metadata={
        "help": "target average drop rate, FLOPs-weighted; or 'auto': the highest rate whose gradient stays "
                "faithful on probe batches (see `verticals.dropbp.check_fidelity`)"})
    allocation: str = field(default="uniform", metadata={"help": "uniform, or sensitivity (measured on probes)"})
    schedule: str = field(default="constant", metadata={"help": "constant, or linear warm-up from 0"})
    warmup_steps: int = field(default=0, metadata={"help": "optimizer steps of the linear warm-up"})
    cap: float = field(default=0.9, metadata={"help": "highest drop rate any branch gets"})
    rate_step: float = field(default=0.1, metadata={"help": "grid of the greedy sensitivity allocation"})
    seq_len: int = field(default=512, metadata={"help": "sequence length used to weigh attention FLOPs"})
    seed: int = field(default=0, metadata={"help": "seed of the private mask generator (same on every rank)"})
    min_cosine: float = field(default=MIN_COSINE, metadata={
        "help": "auto: lowest cosine of the expected DropBP gradient with the full gradient it accepts"})

    def __post_init__(self) -> None:
        if not 0 <= self.cap < 1:
            raise DropBPError(f"`cap` should be in [0, 1), got {self.cap}")
        if isinstance(self.drop_rate, str) and self.drop_rate != "auto" or isinstance(self.drop_rate, bool):
            raise DropBPError(f"`drop_rate` should be a number or 'auto', got {self.drop_rate!r}")
        if not -1 <= self.min_cosine <= 1:
            raise DropBPError(f"`min_cosine` should be in [-1, 1], got {self.min_cosine}")
        if not self.auto and not 0 <= float(self.drop_rate) <= self.cap:
            raise DropBPError(f"`drop_rate` should be in [0, cap={self.cap}], got {self.drop_rate}: a higher target "
                              "cannot be met when no branch may be dropped more often than the cap")
        if self.allocation not in ALLOCATIONS:
            raise DropBPError(f"`allocation` should be one of {ALLOCATIONS}, got {self.allocation!r}")
        if self.schedule not in SCHEDULES:
            raise DropBPError(f"`schedule` should be one of {SCHEDULES}, got {self.schedule!r}")
        if self.warmup_steps < 0 or (self.schedule == "linear" and self.warmup_steps == 0):
            raise DropBPError(f"`warmup_steps` should be positive with a linear schedule, got {self.warmup_steps}")
        if not 0 < self.rate_step <= 1:
            raise DropBPError(f"`rate_step` should be in (0, 1], got {self.rate_step}")
        if self.seq_len < 1:
            raise DropBPError(f"`seq_len` should be positive, got {self.seq_len}")

    @property
    def auto(self) -> bool:
        """The rate is chosen by measuring the gradient's fidelity (at calibration); until then nothing drops."""
        return self.drop_rate == "auto"

    @property
    def rate(self) -> float:
        """The numeric target (0 for `auto` before its check)."""
        return 0.0 if self.auto else float(self.drop_rate)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
