"""Per-branch drop rates from measured sensitivity, under a FLOPs budget.

Sensitivity of branch l (the paper's default, `gradnorm` form): S_l = sum over trainable parameter
tensors of (||g|| - ||g^(l)||)^2, where g is the gradient with nothing dropped and g^(l) the
gradient with only branch l dropped, summed over a few probe batches. Allocation is the greedy
water-filling of the paper: starting from 0, raise by `step` the rate of the branch with the
smallest S_l * (p_l + step), never above `cap`, until the kept backward FLOPs
sum_l F_l (1 - p_l) fall to (1 - target) * sum_l F_l.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from verticals.dropbp.config import DropBPError

if TYPE_CHECKING:
    from verticals.dropbp.model import DropBP


def allocate(sensitivities: np.ndarray, flops: np.ndarray, target: float, *, cap: float = 0.9, step: float = 0.1,
             seed: int = 0) -> np.ndarray:
    """Drop rates meeting the FLOPs budget of `target`, lowest where sensitivity is highest.

    Ties are broken in a random order drawn from `seed` (no bias toward early layers).

    Raises:
        DropBPError: `target` above `cap`, or inputs of different lengths or with negative values.
    """
    s, f = np.asarray(sensitivities, dtype=float), np.asarray(flops, dtype=float)
    if s.shape != f.shape or s.ndim != 1 or len(s) == 0:
        raise DropBPError(f"need one sensitivity and one FLOPs value per branch, got {s.shape} and {f.shape}")
    if (s < 0).any() or (f <= 0).any():
        raise DropBPError("sensitivities must be >= 0 and FLOPs > 0")
    if not 0 <= target <= cap:
        raise DropBPError(f"target drop rate {target} is above the cap {cap}: it cannot be met")
    order = torch.randperm(len(s), generator=torch.Generator().manual_seed(seed)).numpy()
    rank = np.empty_like(order)
    rank[order] = np.arange(len(s))
    rates = np.zeros(len(s))
    budget = (1 - target) * f.sum()
    kept = f.sum()
    tolerance = 1e-9 * f.sum()
    while kept > budget + tolerance:
        eligible = rates + step <= cap + 1e-9
        if not eligible.any():  # only reachable when the grid cannot hit the target exactly below the cap
            raise DropBPError(f"target drop rate {target} cannot be met with step {step} and cap {cap}")
        cost = np.where(eligible, s * (rates + step), np.inf)
        best = int(np.lexsort((rank, cost))[0])
        rates[best] += step
        kept -= step * f[best]
    return np.round(rates, 10)


def measure_sensitivity(controller: DropBP, loss_fn: Callable[[Any], torch.Tensor], batches: list[Any]) -> np.ndarray:
    """S_l for every branch, from one forward and 1 + N backward passes per probe batch.

    Branch l's dropped backward is played by zeroing the gradient at the outputs of its modules: the
    same gradients as running them under `no_grad`, as a training step does, but every probe shares
    one forward (and its dropout draws), so calibration costs about a third less. The caller's RNG
    state is restored and gradients are cleared.
    """
    if not batches:
        raise DropBPError("sensitivity allocation needs at least one probe batch")
    model = controller.model
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise DropBPError("the model has no trainable parameters to measure sensitivity on")
    n = len(controller.branches)
    total = np.zeros(n)
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    was_training = model.training
    model.train()  # branches drop only in training mode; a model left in eval mode would measure zeros
    controller.set_mask([False] * n)
    gates = _GradientGates(controller)
    try:
        with torch.random.fork_rng(devices=devices), gates:
            for batch in batches:
                gates.closed = None
                model.zero_grad(set_to_none=True)
                loss = loss_fn(batch)
                full = _grad_norms(model, params, loss, keep_graph=True)
                for branch in range(n):
                    gates.closed = branch
                    probe = _grad_norms(model, params, loss, keep_graph=branch < n - 1)
                    total[branch] += float(((full - probe) ** 2).sum())
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        shared = torch.tensor(total, dtype=torch.float64, device=collective_device())
        torch.distributed.all_reduce(shared)
        total = shared.cpu().numpy() / torch.distributed.get_world_size()
    return total


def collective_device() -> torch.device:
    """Where a tensor must be for the process group's collectives (NCCL takes only CUDA tensors)."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class _GradientGates:
    """While active, the outputs of every branch's modules pass no gradient when that branch is `closed`."""

    def __init__(self, controller: DropBP) -> None:
        self.branches = controller.branches
        self.closed: int | None = None
        self._handles: list[Any] = []

    def __enter__(self) -> _GradientGates:
        for index, branch in enumerate(self.branches):
            for module in branch.modules:
                self._handles.append(module.register_forward_hook(
                    lambda module, args, kwargs, output, index=index: self._gate((args, kwargs), output, index),
                    with_kwargs=True))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _gate(self, inputs_of: Any, output: Any, index: int) -> None:
        inputs = {id(a) for a in _tensors(inputs_of)}
        for tensor in _tensors(output):
            if tensor.requires_grad and id(tensor) not in inputs:  # a module that returns its input is a pass-through
                tensor.register_hook(lambda grad: torch.zeros_like(grad) if self.closed == index else None)


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def _grad_norms(model: torch.nn.Module, params: list[torch.nn.Parameter], loss: torch.Tensor,
                keep_graph: bool) -> np.ndarray:
    model.zero_grad(set_to_none=True)
    if loss.requires_grad:
        loss.backward(retain_graph=keep_graph)
    return np.array([0.0 if p.grad is None else float(p.grad.detach().float().norm()) for p in params])
