"""Greedy FLOPs-budgeted allocation of drop rates, and sensitivity calibration on a tiny Llama."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.dropbp.tiny import ARCHS, VOCAB, backward, batch, tiny
from verticals import dropbp
from verticals.dropbp import DropBPError, allocate

PAPER_S = [8, 4, 2, 1, 1, 1, 0.5, 0.25]


@pytest.mark.parametrize(("target", "expected"), [
    (0.5, [0, .1, .3, .6, .6, .6, .9, .9]),
    (0.75, [.2, .4, .9, .9, .9, .9, .9, .9]),
    (0.875, [.7, .9, .9, .9, .9, .9, .9, .9]),
])
def test_reproduces_the_illustration_of_the_notes(target: float, expected: list[float]) -> None:
    rates = allocate(np.array(PAPER_S), np.ones(8), target)
    np.testing.assert_allclose(rates, expected, atol=1e-9)


def _check_budget(rates: np.ndarray, flops: np.ndarray, target: float, cap: float = 0.9) -> None:
    assert (flops * (1 - rates)).sum() <= (1 - target) * flops.sum() + 1e-9 * flops.sum()
    weighted = (flops * rates).sum() / flops.sum()
    assert target - 1e-9 <= weighted <= target + 0.1 * flops.max() / flops.sum() + 1e-9  # last raise needed
    assert rates.min() >= 0 and rates.max() <= cap + 1e-9
    np.testing.assert_allclose(rates * 10, np.round(rates * 10), atol=1e-6)  # on the 0.1 grid


@pytest.mark.parametrize("seed", range(6))
def test_budget_cap_grid_and_determinism(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 12))
    s, f = rng.exponential(size=n), rng.uniform(1, 10, size=n)
    for target in (0.0, 0.1, 0.33, 0.5, 0.75, 0.9):
        rates = allocate(s, f, target, seed=seed)
        _check_budget(rates, f, target)
        np.testing.assert_array_equal(rates, allocate(s, f, target, seed=seed))
        if target == 0:
            assert not rates.any()
    equal = np.ones(n)
    for target in (0.2, 0.55, 0.8):
        rates = allocate(s, equal, target, seed=seed)
        _check_budget(rates, equal, target)
        for i in np.flatnonzero(rates):  # with equal FLOPs, undoing any single raise breaks the budget
            undone = rates.copy()
            undone[i] -= 0.1
            assert (1 - undone).sum() > (1 - target) * n + 1e-9


def test_lower_cap_is_respected() -> None:
    rates = allocate(np.array(PAPER_S), np.ones(8), 0.5, cap=0.6)
    _check_budget(rates, np.ones(8), 0.5, cap=0.6)
    assert rates.max() == pytest.approx(0.6)


def test_higher_sensitivity_gets_a_lower_rate() -> None:
    s = np.array([0.1, 5.0, 0.5, 2.0, 1.0])
    rates = allocate(s, np.ones(5), 0.5)
    order = np.argsort(s)
    assert all(rates[a] >= rates[b] for a, b in zip(order, order[1:]))
    assert rates[1] < rates[0]


def test_ties_are_broken_by_the_seed_without_depth_bias() -> None:
    s, f = np.ones(8), np.ones(8)
    allocations = [allocate(s, f, 0.45, seed=seed) for seed in range(100)]
    assert all(sorted(a.tolist()) == pytest.approx([.4] * 4 + [.5] * 4) for a in allocations)
    assert len({tuple(a.round(6)) for a in allocations}) > 10
    early_higher = sum(a[:4].sum() > a[4:].sum() + 1e-9 for a in allocations)
    late_higher = sum(a[4:].sum() > a[:4].sum() + 1e-9 for a in allocations)
    assert 20 <= early_higher <= 60 and 20 <= late_higher <= 60
    assert np.mean(allocations, axis=0)[0] < 0.5  # the first branch is not always raised first


def test_flops_enter_the_budget() -> None:
    # a cheap insensitive branch must reach 0.5 to save 5% of FLOPs dominated by a sensitive expensive one
    np.testing.assert_allclose(allocate(np.array([1.0, 100.0]), np.array([1.0, 9.0]), 0.05), [0.5, 0.0])
    np.testing.assert_allclose(allocate(np.array([1.0, 100.0]), np.array([1.0, 1.0]), 0.05), [0.1, 0.0])
    np.testing.assert_allclose(allocate(np.array([100.0, 1.0]), np.array([1.0, 9.0]), 0.45), [0.0, 0.5])
    # ...but only the budget: the priority is S * (p + step), not divided by FLOPs (that would give [0, 0.2])
    np.testing.assert_allclose(allocate(np.array([1.0, 1.7]), np.array([1.0, 4.0]), 0.1), [0.1, 0.1])


@pytest.mark.parametrize(("s", "f", "target"), [
    ([1, 1], [1, 1], 0.95),
    ([1, 1, 1], [1, 1], 0.5),
    ([1, -1], [1, 1], 0.5),
    ([1, 1], [1, 0], 0.5),
    ([], [], 0.5),
])
def test_bad_inputs_raise(s: list[float], f: list[float], target: float) -> None:
    with pytest.raises(DropBPError):
        allocate(np.array(s, dtype=float), np.array(f, dtype=float), target)


def test_uniform_allocation_is_the_target_everywhere() -> None:
    controller = dropbp.apply(tiny("llama"), drop_rate=0.3)
    assert len(set(controller.flops.tolist())) == 2  # attention and MLP differ, the rates do not
    np.testing.assert_allclose(controller.rates, 0.3)
    assert controller.sensitivities is None


def _reference_sensitivity(model: torch.nn.Module, controller: dropbp.DropBP, batches: list[dict],
                           rng: torch.Tensor) -> np.ndarray:
    """S_l = sum over parameter tensors of (||g|| - ||g^(l)||)^2, every probe from the same RNG state `rng`."""
    def norms(mask: list[bool], data: dict) -> np.ndarray:
        controller.set_mask(mask)
        torch.random.set_rng_state(rng)
        grads = backward(model, data)
        return np.array([0.0 if g is None else float(g.norm()) for g in grads.values()])

    n = len(controller.branches)
    total = np.zeros(n)
    for data in batches:
        full = norms([False] * n, data)
        for branch in range(n):
            total[branch] += ((full - norms([i == branch for i in range(n)], data)) ** 2).sum()
    model.zero_grad(set_to_none=True)
    controller.resume_sampling()
    return total


def test_calibrate_measures_the_gradnorm_sensitivity() -> None:
    model = tiny("llama")
    controller = dropbp.apply(model, drop_rate=0.5, allocation="sensitivity", seed=5)
    probes = [batch(1), batch(2)]
    torch.manual_seed(11)
    rng = torch.random.get_rng_state()
    s = controller.calibrate(lambda b: model(**b).loss, probes)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert s.shape == (4,) and np.isfinite(s).all() and (s > 0).all()
    assert controller.sensitivities is s
    assert all(p.grad is None for p in model.parameters())
    np.testing.assert_array_equal(controller.target_rates, allocate(s, controller.flops, 0.5, seed=5))
    _check_budget(controller.rates, controller.flops, 0.5)
    assert controller.sampling and not controller.mask.any()

    twin = dropbp.apply(tiny("llama"), seed=5)  # calibration must not consume the mask generator
    twin.target_rates = controller.target_rates.copy()
    masks = []
    for _ in range(6):
        model(**batch())
        masks.append(controller.mask.tolist())
    assert masks == [twin.sample().tolist() for _ in range(6)]
    assert any(any(m) for m in masks)

    np.testing.assert_array_equal(controller.calibrate(lambda b: model(**b).loss, probes), s)
    np.testing.assert_allclose(s, _reference_sensitivity(model, controller, probes, rng), rtol=1e-5)


def test_calibrate_is_deterministic_with_dropout() -> None:
    model = tiny("llama", attention_dropout=0.5)
    controller = dropbp.apply(model, allocation="sensitivity")
    probes = [batch(3)]
    torch.manual_seed(0)
    rng = torch.random.get_rng_state()
    first = controller.calibrate(lambda b: model(**b).loss, probes)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert np.isfinite(first).all() and (first > 0).all()
    np.testing.assert_array_equal(controller.calibrate(lambda b: model(**b).loss, probes), first)
    # every probe of a batch sees the same dropout draws: only the dropped branch makes the difference
    np.testing.assert_allclose(first, _reference_sensitivity(model, controller, probes, rng), rtol=1e-5)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_one_forward_calibration_equals_dropping_each_branch_in_turn(arch: str) -> None:
    # calibration zeroes gradients at a branch's module outputs on one shared forward; a training step
    # runs the dropped branch under no_grad instead: the sensitivities must be the same
    model = tiny(arch, **({"resid_pdrop": 0.2} if arch == "gpt2" else {"attention_dropout": 0.2}))
    controller = dropbp.apply(model, allocation="sensitivity")
    probes = [batch(4)]  # one: the reference replays the same RNG state for every batch
    torch.manual_seed(3)
    rng = torch.random.get_rng_state()
    s = controller.calibrate(lambda b: model(**b).loss, probes)
    assert (s > 0).all()
    np.testing.assert_allclose(s, _reference_sensitivity(model, controller, probes, rng), rtol=1e-5)


class _FusedNorm(torch.nn.Module):
    """A fused add-and-norm, as some decoders have: it returns its keyword input (the residual) unchanged."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(width)

    def forward(self, *, residual: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.norm(residual), residual


class _Layer(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.input_layernorm, self.self_attn = _FusedNorm(width), torch.nn.Linear(width, width)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(width, 2 * width), torch.nn.GELU(),
                                       torch.nn.Linear(2 * width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed, residual = self.input_layernorm(residual=x)  # the skip path leaves through the branch's module
        x = residual + self.self_attn(normed)
        return x + self.mlp(x)


class _PassThroughDecoder(torch.nn.Module):
    def __init__(self, width: int = 16, layers: int = 3) -> None:
        super().__init__()
        self.embed, self.layers = torch.nn.Embedding(VOCAB, width), torch.nn.ModuleList(
            _Layer(width) for _ in range(layers))
        self.head = torch.nn.Linear(width, VOCAB)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor) -> SimpleNamespace:
        x = self.embed(input_ids)
        for layer in self.layers:
            x = layer(x)
        return SimpleNamespace(loss=torch.nn.functional.cross_entropy(self.head(x).flatten(0, 1), labels.flatten()))


def test_calibration_lets_gradient_through_a_module_that_returns_its_input() -> None:
    # closing a branch must not cut the skip path when a branch module hands its input back unchanged:
    # under no_grad (a training step's drop) that tensor keeps its gradient, so calibration must too
    torch.manual_seed(0)
    model = _PassThroughDecoder().train()
    controller = dropbp.apply(model, allocation="sensitivity")
    assert [b.name for b in controller.branches][:2] == ["layers.0.attn", "layers.0.mlp"]
    probes = [batch(6)]
    rng = torch.random.get_rng_state()
    s = controller.calibrate(lambda b: model(**b).loss, probes)
    np.testing.assert_allclose(s, _reference_sensitivity(model, controller, probes, rng), rtol=1e-5)


def test_calibrate_needs_batches_and_keeps_sampling_off() -> None:
    model = tiny("llama")
    controller = dropbp.apply(model, allocation="sensitivity")
    with pytest.raises(DropBPError):
        controller.calibrate(lambda b: model(**b).loss, [])
    controller.set_mask([True, False, True, False])
    controller.calibrate(lambda b: model(**b).loss, [batch()])
    assert not controller.sampling  # calibration does not switch sampling back on


def test_calibrate_works_on_a_model_left_in_eval_mode() -> None:
    model = tiny("llama")
    controller = dropbp.apply(model, drop_rate=0.5)
    model.eval()  # e.g. after an evaluation, or straight from from_pretrained
    s = controller.calibrate(lambda b: model(**b).loss, [batch(0)])
    assert (s > 0).all()
    assert not model.training
