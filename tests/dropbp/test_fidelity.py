"""The fidelity check: the expected DropBP gradient in one backward pass, exactly; the check's table and choice."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from tests.dropbp.tiny import backward, batch, tiny
from verticals import dropbp
from verticals.dropbp import DropBPError
from verticals.dropbp.fidelity import Fidelity, _cosine, _GradientScaler, check_fidelity, expected_cosine


def _flat(grads: dict[str, torch.Tensor | None], names: list[str]) -> torch.Tensor:
    return torch.cat([grads[n].double().flatten() if grads[n] is not None else torch.zeros(0) for n in names])


def _enumerated(model: torch.nn.Module, controller: dropbp.DropBP, rates: np.ndarray, names: list[str],
                params: dict[str, torch.nn.Parameter]) -> torch.Tensor:
    """The expected DropBP gradient by brute force: every mask, weighted by its probability."""
    total = torch.zeros(sum(params[n].numel() for n in names), dtype=torch.float64)
    for mask in itertools.product([False, True], repeat=len(rates)):
        weight = float(np.prod([r if dropped else 1 - r for r, dropped in zip(rates, mask)]))
        controller.set_mask(list(mask))
        model.zero_grad(set_to_none=True)
        loss = model(**batch()).loss
        if loss.requires_grad:  # False when a LoRA model's every branch is dropped: no gradient at all
            loss.backward()
        grads = {n: p.grad for n, p in params.items()}
        total += weight * torch.cat([(grads[n] if grads[n] is not None else torch.zeros_like(params[n]))
                                     .double().flatten() for n in names])
    controller.set_mask([False] * len(rates))
    return total


@pytest.mark.parametrize("arch", ["llama", "gemma3", "gpt2", "phi"])
def test_one_scaled_backward_is_the_expected_gradient_over_every_mask(arch: str) -> None:
    model = tiny(arch)
    controller = dropbp.apply(model, drop_rate=0.0)
    params = dict(model.named_parameters())
    names = list(params)
    rates = np.array([0.2, 0.5, 0.7, 0.3])  # a different rate per branch
    exact = _enumerated(model, controller, rates, names, params)
    with _GradientScaler(controller) as scaler:
        scaler.keep = 1 - rates
        scaled = _flat(backward(model, batch()), names)
    full = _flat(backward(model, batch()), names)
    assert torch.allclose(scaled, exact, rtol=1e-4, atol=1e-7)
    assert float(torch.nn.functional.cosine_similarity(full, exact, dim=0)) < 0.9999  # the test can tell them apart


def test_the_expected_gradient_of_a_lora_model_over_every_mask() -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny("llama"), LoraConfig(r=4, target_modules=["q_proj", "v_proj", "up_proj"],
                                                     lora_dropout=0.0))
    with torch.no_grad():  # B at zero would leave every A without a gradient
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.1)
    controller = dropbp.apply(model, drop_rate=0.0)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    rates = np.full(4, 0.5)
    exact = _enumerated(model, controller, rates, list(params), params)
    low = expected_cosine(controller, lambda b: model(**b).loss, [batch()], rates)
    full = _flat(backward(model, batch()), list(params))
    assert low == pytest.approx(float(torch.nn.functional.cosine_similarity(full, exact, dim=0)), abs=1e-6)


def test_cosines_are_summed_in_float64() -> None:
    vector = torch.rand(3_000_000, generator=torch.Generator().manual_seed(0)) * 1000
    assert _cosine([vector, None], [vector, None]) == pytest.approx(1.0, abs=1e-12)
    assert _cosine([vector], [-vector]) == pytest.approx(-1.0, abs=1e-12)
    assert _cosine([None], [vector]) == 0.0


def test_the_check_measures_each_rate_chooses_by_the_threshold_and_leaves_the_model_as_it_was() -> None:
    model = tiny("llama", layers=3)
    controller = dropbp.apply(model, drop_rate=0.5)
    batches = [batch(seed=s) for s in range(2)]
    found = check_fidelity(controller, lambda b: model(**b).loss, batches, rates=(0.01, 0.5, 0.9), masks=3,
                           min_cosine=0.95)
    assert found.passes == 2 * (1 + 3 * (1 + 3)) and found.batches == 2
    by_rate = {r.rate: r for r in found.rates}
    assert by_rate[0.01].cosine_low > 0.99  # nearly nothing dropped: nearly the full gradient
    assert by_rate[0.9].cosine < by_rate[0.01].cosine
    assert all(r.cosine_low <= r.cosine <= r.cosine_high for r in found.rates)
    assert found.chosen == max(r.rate for r in found.rates if r.cosine_low >= 0.95)
    assert by_rate[0.01].kept == pytest.approx(1.0, abs=0.02) and by_rate[0.9].speedup > by_rate[0.5].speedup > 1
    assert controller.sampling and not controller.mask.any() and model.training
    assert all(p.grad is None for p in model.parameters())
    assert "<- auto" in found.table() and f"auto: drop rate {found.chosen}" in found.table()
    assert Fidelity.from_dict(found.to_dict()) == found  # what the training log keeps reproduces the check


def test_a_threshold_no_rate_meets_turns_dropbp_off_in_words() -> None:
    model = tiny("llama")
    controller = dropbp.apply(model, drop_rate=0.5)
    found = check_fidelity(controller, lambda b: model(**b).loss, [batch()], rates=(0.5,), masks=0, min_cosine=1.0)
    assert found.chosen == 0.0 and "DropBP stays off" in found.verdict() and found.rates[0].kept is None


def test_bad_check_settings_are_dropbp_errors() -> None:
    model = tiny("llama")
    controller = dropbp.apply(model)
    with pytest.raises(DropBPError, match="at least one batch"):
        check_fidelity(controller, lambda b: model(**b).loss, [])
    with pytest.raises(DropBPError, match=r"rates should be in \[0, 1\)"):
        check_fidelity(controller, lambda b: model(**b).loss, [batch()], rates=(1.0,))


def test_auto_drops_nothing_until_calibrated_then_takes_the_checked_rate() -> None:
    model = tiny("llama")
    controller = dropbp.apply(model, drop_rate="auto", min_cosine=0.0)
    assert controller.config.auto and not controller.rates.any()
    controller.calibrate(lambda b: model(**b).loss, [batch(seed=0), batch(seed=1)])
    found = controller.fidelity
    assert found is not None and found.chosen > 0
    assert controller.rates.tolist() == [found.chosen] * 4
    assert all(r.cosine_low >= 0.0 for r in found.rates if r.rate <= found.chosen)
    state = controller.state_dict()
    again = dropbp.apply(controller.remove(), drop_rate="auto")
    again.load_state_dict(state)  # a resumed run keeps what was measured: no second check
    assert again.fidelity == found and again.rates.tolist() == controller.rates.tolist()


@pytest.mark.parametrize("allocated_cosine", [0.0, 1.0])
def test_auto_with_sensitivity_allocation_keeps_the_more_faithful_rates(monkeypatch: pytest.MonkeyPatch,
                                                                        allocated_cosine: float) -> None:
    from verticals.dropbp import model as dropbp_model

    model = tiny("llama", layers=3)
    controller = dropbp.apply(model, drop_rate="auto", allocation="sensitivity", min_cosine=0.0)
    monkeypatch.setattr(dropbp_model, "expected_cosine", lambda *args, **kwargs: allocated_cosine)
    sensitivities = controller.calibrate(lambda b: model(**b).loss, [batch(seed=0)])
    assert sensitivities is not None and controller.fidelity is not None
    chosen = controller.fidelity.chosen
    by_sensitivity = dropbp.allocate(sensitivities, controller.flops, chosen, seed=0)
    assert not np.allclose(by_sensitivity, chosen)  # the two candidates differ, so the choice shows
    expected = by_sensitivity if allocated_cosine == 1.0 else np.full(6, chosen)
    assert np.allclose(controller.rates, expected)


def test_auto_never_chooses_above_the_cap() -> None:
    model = tiny("llama")
    controller = dropbp.apply(model, drop_rate="auto", min_cosine=-1.0, cap=0.3)
    controller.calibrate(lambda b: model(**b).loss, [batch()])
    assert controller.fidelity is not None and controller.fidelity.chosen == 0.25


def test_settings_are_checked_by_name() -> None:
    with pytest.raises(DropBPError, match="unknown DropBP setting 'rate'; the settings are drop_rate, allocation"):
        dropbp.apply(tiny("llama"), rate=0.5)
    with pytest.raises(DropBPError, match="a number or 'auto', got 'fast'"):
        dropbp.DropBPConfig(drop_rate="fast")
