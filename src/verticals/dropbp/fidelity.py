"""How faithful is the DropBP gradient on this model? Measured on a few of the user's batches, before a run.

DropBP draws each branch's mask independently, and the gradient is linear in each branch's share of
the backward pass, so the EXPECTED DropBP gradient is exactly the full backward pass with each
branch's share (to its own parameters and back into the residual stream) scaled by its keep
probability 1 - p. One backward pass per drop rate gives it, without sampling noise; an average of
a few random masks understates it (on the bundled model at 0.5: about 0.49 from 16 masks against
0.62 exact). Its cosine with the full gradient says how far, on average, DropBP steers the optimizer
from where the loss falls fastest. Cosines are summed in float64 (a float32 dot product over
millions of values gave 1.0004 for identical vectors).

A few random masks per rate give the other figure: how close a kept branch's own gradient is to its
full gradient in one step, by depth (first, middle and last third of the branches).

The cost is stated and bounded: per batch, one full backward pass, one per rate, and `masks` per
rate (`Fidelity.passes`), each a forward and a backward of that batch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from verticals.dropbp.allocation import _tensors
from verticals.dropbp.config import MIN_COSINE as _MIN_COSINE
from verticals.dropbp.config import DropBPError

if TYPE_CHECKING:
    from verticals.dropbp.model import DropBP

#: the rates `auto` chooses from, and the check's default grid
GRID = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75)
#: `auto`'s threshold (docs/dropbp.md and `config.MIN_COSINE` say why)
MIN_COSINE = _MIN_COSINE


@dataclass(frozen=True)
class RateFidelity:
    """The DropBP gradient at one (uniform) drop rate, against the full gradient."""

    rate: float
    cosine: float  # cos(expected DropBP gradient, full gradient), mean over batches
    cosine_low: float  # ... the lowest over batches
    cosine_high: float  # ... the highest
    kept: float | None  # one step's kept branch against its full gradient, mean over masks and branches
    thirds: tuple[float | None, float | None, float | None]  # `kept` in the first, middle and last third
    speedup: float  # predicted step-time speed-up (FLOPs model, from this check's own timings)


@dataclass(frozen=True)
class Fidelity:
    """What `check_fidelity` measured, and the rate `auto` takes from it."""

    rates: tuple[RateFidelity, ...]
    min_cosine: float
    chosen: float  # the highest rate whose cosine stays >= min_cosine on every batch; 0 when none does
    batches: int
    masks: int
    passes: int  # forward + backward passes the check ran
    seconds: float
    step_seconds: float  # one full forward + backward pass of a batch, as measured here

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fidelity:
        rates = tuple(RateFidelity(**{**r, "thirds": tuple(r["thirds"])}) for r in data["rates"])
        return cls(**{**data, "rates": rates})

    def table(self) -> str:
        """The check as a plain-text table, then the choice in words."""
        head = (f"{'drop rate':>9}  {'cos expected':>12}  {'batches (low-high)':>18}  {'kept branch':>11}  "
                f"{'first':>5}  {'middle':>6}  {'last':>5}  {'speed-up':>8}")
        lines = [head]
        for r in self.rates:
            thirds = "  ".join(f"{_num(t):>{w}}" for t, w in zip(r.thirds, (5, 6, 5)))
            mark = "  <- auto" if r.rate == self.chosen else ""
            lines.append(f"{r.rate:>9.3f}  {r.cosine:>12.3f}  {f'{r.cosine_low:.3f}-{r.cosine_high:.3f}':>18}  "
                         f"{_num(r.kept):>11}  {thirds}  {r.speedup:>7.2f}x{mark}")
        lines.append(self.verdict())
        lines.append(f"measured on {self.batches} batches with {self.masks} masks per rate: {self.passes} forward "
                     f"and backward passes in {self.seconds:.0f} s (one pass {self.step_seconds:.2f} s)")
        return "\n".join(lines)

    def verdict(self) -> str:
        if not self.chosen:
            low = min(self.rates, key=lambda r: r.rate)
            return (f"auto: no rate keeps the expected gradient's cosine at {self.min_cosine} or more on every batch "
                    f"(at {low.rate}: {low.cosine_low:.3f}); DropBP stays off on this model")
        row = next(r for r in self.rates if r.rate == self.chosen)
        return (f"auto: drop rate {self.chosen} (cosine {row.cosine_low:.3f} or more on every batch, threshold "
                f"{self.min_cosine}); predicted step speed-up {row.speedup:.2f}x")


def _num(value: float | None) -> str:
    return "-" if value is None or np.isnan(value) else f"{value:.3f}"


def check_fidelity(controller: DropBP, loss_fn: Callable[[Any], torch.Tensor], batches: Iterable[Any], *,
                   rates: Sequence[float] = GRID, masks: int = 2, min_cosine: float = MIN_COSINE,
                   seed: int = 0) -> Fidelity:
    """Measure the DropBP gradient against the full gradient at each of `rates` on `batches`.

    Args:
        controller: from `verticals.dropbp.apply` on the model (its masks are set by hand here, then
            handed back as they were).
        loss_fn: `loss_fn(batch)` runs the model and returns a scalar loss.
        batches: a few of the user's batches; the spread over them is reported.
        rates: uniform drop rates to measure.
        masks: random masks per rate for the kept-branch figure (0 skips it: `auto` needs only the expected one).
        min_cosine: `auto`'s threshold.

    Raises:
        DropBPError: no batches, no trainable parameters, or a rate outside [0, 1).
    """
    batches = list(batches)
    if not batches:
        raise DropBPError("the fidelity check needs at least one batch")
    if any(not 0 <= r < 1 for r in rates) or not rates:
        raise DropBPError(f"fidelity rates should be in [0, 1), got {list(rates)}")
    if masks < 0:
        raise DropBPError(f"masks should be 0 or more, got {masks}")
    owner = _owners(controller, [p for p in controller.model.parameters() if p.requires_grad])
    n = len(controller.branches)
    rng = np.random.default_rng(seed)
    began, passes, step_times = time.perf_counter(), 0, []
    expected = np.zeros((len(rates), len(batches)))
    kept: list[list[list[float]]] = [[[] for _ in range(n)] for _ in rates]  # rate, branch: cosine per kept mask
    with _measuring(controller, loss_fn, seed) as gradient:
        for b, batch in enumerate(batches):
            start = time.perf_counter()
            full = gradient(batch, None)
            step_times.append(time.perf_counter() - start)
            passes += 1
            for r, rate in enumerate(rates):
                expected[r, b] = _cosine(gradient(batch, np.full(n, 1.0 - rate)), full)
                passes += 1
                for _ in range(masks):
                    mask = rng.random(n) < rate
                    controller.set_mask(mask.tolist())
                    grads = gradient(batch, None)
                    controller.set_mask([False] * n)
                    passes += 1
                    for branch in np.flatnonzero(~mask):
                        mine = [i for i, o in enumerate(owner) if o == branch]
                        if mine:
                            kept[r][branch].append(_cosine([grads[i] for i in mine], [full[i] for i in mine]))
    speedups = _speedups(controller, rates)
    rows = []
    for r, rate in enumerate(rates):
        per_branch = np.array([np.mean(c) if c else np.nan for c in kept[r]])
        thirds = tuple(_mean(part) for part in np.array_split(per_branch, 3))
        every = [c for branch in kept[r] for c in branch]
        rows.append(RateFidelity(rate=float(rate), cosine=float(expected[r].mean()),
                                 cosine_low=float(expected[r].min()), cosine_high=float(expected[r].max()),
                                 kept=float(np.mean(every)) if every else None, thirds=thirds,  # type: ignore[arg-type]
                                 speedup=float(speedups[r])))
    good = [row.rate for row in rows if row.cosine_low >= min_cosine]
    return Fidelity(rates=tuple(rows), min_cosine=min_cosine, chosen=max(good) if good else 0.0,
                    batches=len(batches), masks=masks, passes=passes, seconds=time.perf_counter() - began,
                    step_seconds=float(np.median(step_times)))


def expected_cosine(controller: DropBP, loss_fn: Callable[[Any], torch.Tensor], batches: Iterable[Any],
                    drop_rates: np.ndarray, seed: int = 0) -> float:
    """cos(expected DropBP gradient, full gradient) at per-branch `drop_rates`, the lowest over `batches`."""
    keep = 1.0 - np.asarray(drop_rates, dtype=float)
    with _measuring(controller, loss_fn, seed) as gradient:
        return min((_cosine(gradient(batch, keep), gradient(batch, None)) for batch in batches), default=1.0)


@contextlib.contextmanager
def _measuring(controller: DropBP, loss_fn: Callable[[Any], torch.Tensor],
               seed: int) -> Iterator[Callable[[Any, np.ndarray | None], list[torch.Tensor | None]]]:
    """`gradient(batch, keep)`: the trainable parameters' gradient on `batch`, with each branch's share of
    the backward scaled by `keep` (None: the full gradient), the same dropout draws in every pass. The
    model's mode, the controller's masks and sampling, the caller's RNG and the gradients are restored."""
    model = controller.model
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise DropBPError("the model has no trainable parameters to measure a gradient on")
    n = len(controller.branches)
    was_training, was_sampling = model.training, controller.sampling
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    model.train()  # branches drop only in training mode
    scaler = _GradientScaler(controller)

    def gradient(batch: Any, keep: np.ndarray | None) -> list[torch.Tensor | None]:
        scaler.keep = keep
        torch.manual_seed(seed)
        model.zero_grad(set_to_none=True)
        loss = loss_fn(batch)
        if loss.requires_grad:
            loss.backward()
        return [None if p.grad is None else p.grad.detach().clone() for p in params]

    try:
        with torch.random.fork_rng(devices=devices), scaler:
            controller.set_mask([False] * n)
            yield gradient
    finally:
        controller.set_mask([False] * n)
        controller.sampling = was_sampling
        model.train(was_training)
        model.zero_grad(set_to_none=True)


def _mean(values: np.ndarray) -> float | None:
    values = values[~np.isnan(values)]
    return float(values.mean()) if len(values) else None


def _cosine(a: list[torch.Tensor | None], b: list[torch.Tensor | None]) -> float:
    """Cosine of two gradients given per parameter (None: no gradient, zeros), summed in float64."""
    dot = aa = bb = 0.0
    for x, y in zip(a, b):
        if x is not None:
            x64 = x.double()
            aa += float((x64 * x64).sum())
            if y is not None:
                dot += float((x64 * y.double()).sum())
        if y is not None:
            y64 = y.double()
            bb += float((y64 * y64).sum())
    if aa == 0 or bb == 0:
        return 0.0
    return dot / float(np.sqrt(aa) * np.sqrt(bb))


def _owners(controller: DropBP, params: list[torch.nn.Parameter]) -> list[int | None]:
    """Which branch holds each trainable parameter (None: outside every branch, e.g. the head)."""
    where = {id(p): index for index, branch in enumerate(controller.branches) for p in branch.parameters()}
    return [where.get(id(p)) for p in params]


def _speedups(controller: DropBP, rates: Sequence[float]) -> np.ndarray:
    """Step-time speed-up by the FLOPs model: the branches' share of the backward falls by the drop rate.

    The backward pass costs about twice the forward; the LM head's backward cannot be dropped
    (its share h from FLOPs). T(p) = F + B (1 - (1 - h) p), with B = 2F.
    """
    find_head = getattr(controller.model, "get_output_embeddings", None)
    head = find_head() if callable(find_head) else None
    head_flops = 2.0 * head.weight.numel() if head is not None and hasattr(head, "weight") else 0.0
    h = head_flops / (head_flops + controller.flops.sum())
    forward, backward = 1.0, 2.0
    return np.array([(forward + backward) / (forward + backward * (1 - (1 - h) * r)) for r in rates])


class _GradientScaler:
    """While active and `keep` is set, each branch's share of the backward pass is scaled by its keep
    probability: at the output of the branch's last module, so its parameters and the gradient it
    sends back into the residual stream are scaled once (a module whose output feeds another module
    of the same branch, like a pre-norm, is inside the branch and left alone).

    In a parallel block (Phi-1/2, GPT-J, Falcon) one norm feeds both branches and belongs to the
    attention branch: DropBP cuts the MLP's path back through it whenever attention is dropped, so
    that path is scaled by both keep probabilities: the MLP's input from the other branch's module
    passes through an identity whose backward multiplies by that branch's keep probability."""

    def __init__(self, controller: DropBP) -> None:
        self.branches, self.model = controller.branches, controller.model
        self.keep: np.ndarray | None = None
        self._inside: set[int] = set()  # id of modules whose output stays inside their branch
        self._outputs: dict[int, int] = {}  # id(output tensor) -> id(module), for the current forward
        self._branch_of = {id(m): index for index, b in enumerate(self.branches) for m in b.modules}
        self._alive: list[torch.Tensor] = []  # the outputs above, kept alive so their ids are not reused
        self._handles: list[Any] = []

    def __enter__(self) -> _GradientScaler:
        self._handles.append(self.model.register_forward_pre_hook(lambda module, args: self._forget()))
        for index, branch in enumerate(self.branches):
            members = {id(m) for m in branch.modules}
            for module in branch.modules:
                self._handles.append(module.register_forward_pre_hook(
                    lambda module, args, kwargs, index=index: self._crossing(args, kwargs, index), with_kwargs=True))
                self._handles.append(module.register_forward_hook(
                    lambda module, args, kwargs, output, index=index, members=members:
                    self._seen(module, (args, kwargs), output, index, members), with_kwargs=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._outputs.clear()
        self._alive.clear()

    def _forget(self) -> None:
        """A new forward pass: the last one's outputs need not be kept alive any longer."""
        self._outputs.clear()
        self._alive.clear()

    def _seen(self, module: torch.nn.Module, inputs_of: Any, output: Any, index: int, members: set[int]) -> None:
        inputs = _tensors(inputs_of)
        for tensor in inputs:
            source = self._outputs.get(id(tensor))
            if source is not None and source in members and source != id(module):
                self._inside.add(source)
        ids = {id(t) for t in inputs}
        for tensor in _tensors(output):
            if tensor.requires_grad and id(tensor) not in ids:  # a module that returns its input is a pass-through
                me = self._outputs[id(tensor)] = id(module)
                self._alive.append(tensor)
                tensor.register_hook(lambda grad, index=index, me=me: self._scale(grad, index, me))

    def _crossing(self, args: tuple[Any, ...], kwargs: dict[str, Any],
                  index: int) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
        """Inputs made by a module of another branch get that branch's keep probability on their way back."""
        if self.keep is None:
            return None
        keep = self.keep

        def through(value: Any) -> Any:
            source = self._outputs.get(id(value)) if isinstance(value, torch.Tensor) else None
            other = None if source is None else self._branch_of.get(source)
            if other is None or other == index or not value.requires_grad:
                return value
            passed = value.view_as(value)
            passed.register_hook(lambda grad, k=float(keep[other]): grad * k)
            return passed

        return tuple(through(a) for a in args), {k: through(v) for k, v in kwargs.items()}

    def _scale(self, grad: torch.Tensor, index: int, module: int) -> torch.Tensor | None:
        if self.keep is None or module in self._inside:
            return None
        return grad * float(self.keep[index])
