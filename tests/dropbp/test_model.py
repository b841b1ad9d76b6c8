"""DropBP on real (tiny, random) Hugging Face decoders: branches, exact forward, gradients, memory, masks, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from tests.dropbp.tiny import ARCHS, backward, batch, detached, hook_count, layer_list, saved_tensors, tiny
from verticals import dropbp
from verticals.dropbp import DropBPConfig, DropBPError

ALL = list(ARCHS)


@pytest.mark.parametrize("arch", ALL)
def test_branches_split_each_layer_into_attention_and_mlp(arch: str) -> None:
    model = tiny(arch)
    *_, where, attn_parts, mlp_parts = ARCHS[arch]
    layers = layer_list(model, arch)
    branches = dropbp.find_branches(model)
    assert [b.name for b in branches] == [f"{where}.{i}.{k}" for i in range(2) for k in ("attn", "mlp")]
    for i, layer in enumerate(layers):
        attn, mlp = branches[2 * i], branches[2 * i + 1]
        for branch, parts in ((attn, attn_parts), (mlp, mlp_parts)):
            expected = [getattr(layer, name) for name in parts]
            assert len(branch.modules) == len(expected)
            assert all(any(m is e for m in branch.modules) for e in expected), (branch.name, parts)
        layer_ids = [id(p) for p in layer.parameters()]
        attn_ids, mlp_ids = [id(p) for p in attn.parameters()], [id(p) for p in mlp.parameters()]
        assert sorted(attn_ids + mlp_ids) == sorted(layer_ids)  # every parameter in exactly one branch
        assert not set(attn_ids) & set(mlp_ids)
    in_branches = {id(p) for b in branches for p in b.parameters()}
    embeddings, head = model.get_input_embeddings(), model.get_output_embeddings()
    assert not any(id(p) in in_branches for p in [*embeddings.parameters(), *head.parameters()])
    assert all(b.flops > 0 for b in branches)
    assert hook_count(model) == 0  # finding changes nothing


@pytest.mark.parametrize("arch", ALL)
def test_forward_is_exact_and_remove_restores_the_plain_model(arch: str) -> None:
    model, data = tiny(arch), batch()
    keys = list(model.state_dict())
    reference = model(**data).logits.detach()
    controller = dropbp.apply(model, drop_rate=0.5)
    for mask in ([False] * 4, [True] * 4, [True, False, False, True], [False, True, True, False]):
        controller.set_mask(mask)
        assert torch.equal(model(**data).logits, reference) and controller.mask.tolist() == mask
    controller.resume_sampling()
    for _ in range(3):
        assert torch.equal(model(**data).logits, reference)
    assert controller.remove() is model
    assert hook_count(model) == 0 and not hasattr(model, "_dropbp") and list(model.state_dict()) == keys
    assert all(not m._forward_hooks and not m._forward_pre_hooks for b in controller.branches for m in b.modules)
    dropbp.apply(model)  # applicable again once removed


@pytest.mark.parametrize("arch", ALL)
def test_dropped_branches_get_no_gradient_and_kept_ones_do(arch: str) -> None:
    model, data = tiny(arch), batch()
    controller = dropbp.apply(model)
    mask = [True, False, False, True]
    controller.set_mask(mask)
    backward(model, data)
    for branch, dropped in zip(controller.branches, mask):
        grads = [p.grad for p in branch.parameters()]
        if dropped:
            assert all(g is None for g in grads), branch.name
        else:
            assert all(g is not None for g in grads), branch.name
            assert any(float(g.abs().sum()) > 0 for g in grads), branch.name
    assert model.get_input_embeddings().weight.grad is not None


def test_rate_zero_gradients_equal_the_plain_model() -> None:
    model, data = tiny("llama"), batch()
    plain = backward(model, data)
    controller = dropbp.apply(model, drop_rate=0.0)
    with_dropbp = backward(model, data)
    assert not controller.mask.any() and plain.keys() == with_dropbp.keys()
    assert all(torch.equal(plain[n], with_dropbp[n]) for n in plain)


@pytest.mark.parametrize(("index", "last"), [(2, "self_attn"), (1, "mlp"), (0, "self_attn")])
def test_a_dropped_branch_passes_gradient_only_through_the_skip(index: int, last: str) -> None:
    data = batch()
    reference_model = tiny("llama")
    full = backward(reference_model, data)
    layer = reference_model.model.layers[index // 2]
    handle = getattr(layer, last).register_forward_hook(detached)
    reference = backward(reference_model, data)
    handle.remove()

    model = tiny("llama")
    controller = dropbp.apply(model)
    controller.set_mask([i == index for i in range(4)])
    got = backward(model, data)
    for name, expected in reference.items():
        if expected is None:
            assert got[name] is None, name
        else:
            torch.testing.assert_close(got[name], expected, rtol=1e-5, atol=1e-7, msg=name)
    embed = "model.embed_tokens.weight"
    assert float(got[embed].abs().sum()) > 0
    assert not torch.allclose(got[embed], full[embed])  # the branch's Jacobian no longer contributes


def test_dropped_branches_save_no_activations() -> None:
    model, data = tiny("llama"), batch()
    controller = dropbp.apply(model)
    counts = []
    for mask in ([False] * 4, [True, False, False, False], [True] * 4):
        controller.set_mask(mask)
        counts.append(saved_tensors(model, data))
    assert counts[0] > counts[1] > counts[2] > 0


def test_eval_mode_never_drops() -> None:
    model, data = tiny("llama"), batch()
    controller = dropbp.apply(model, drop_rate=0.9)
    controller.set_mask([True] * 4)
    model.eval()
    with torch.enable_grad():
        backward(model, data)
    assert all(p.grad is not None for b in controller.branches for p in b.parameters())
    controller.set_mask([True] * 4)  # the inner model has no mask hook: its branches must check eval themselves
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        model.model(input_ids=data["input_ids"]).last_hidden_state.sum().backward()
    assert all(p.grad is not None for b in controller.branches for p in b.parameters())


def test_one_mask_per_training_forward_from_the_private_generator() -> None:
    model, data = tiny("llama"), batch()
    controller = dropbp.apply(model, drop_rate=0.5, seed=3)
    twin = dropbp.apply(tiny("llama"), drop_rate=0.5, seed=3)
    masks = []
    for _ in range(8):
        model(**data)
        masks.append(controller.mask.tolist())
    assert masks == [twin.sample().tolist() for _ in range(8)]  # exactly one draw per forward
    assert len({tuple(m) for m in masks}) > 1
    model.eval()
    with torch.no_grad():
        model(**data)  # eval forwards draw nothing
    model.train()
    model(**data)
    assert controller.mask.tolist() == twin.sample().tolist()


def test_drop_frequencies_match_the_rates_without_depth_bias() -> None:
    controller = dropbp.apply(tiny("llama", layers=4), drop_rate=0.5)
    rates = np.array([0.1, 0.9, 0.5, 0.3, 0.7, 0.0, 0.5, 0.5])
    controller.target_rates = rates
    frequencies = np.mean([controller.sample() for _ in range(2000)], axis=0)
    assert np.abs(frequencies - rates).max() < 0.05
    controller.target_rates = np.full(8, 0.5)
    frequencies = np.mean([controller.sample() for _ in range(2000)], axis=0)
    assert np.abs(frequencies - 0.5).max() < 0.05
    assert abs(frequencies[:4].mean() - frequencies[4:].mean()) < 0.03


def test_seeds_and_the_global_rng() -> None:
    def masks(seed: int) -> list[list[bool]]:
        controller = dropbp.apply(tiny("llama"), drop_rate=0.5, seed=seed)
        return [controller.sample().tolist() for _ in range(20)]

    assert masks(0) == masks(0) != masks(1)
    controller = dropbp.apply(tiny("llama"), drop_rate=0.5)
    state = torch.random.get_rng_state()
    for _ in range(5):
        controller.sample()
    controller.model(**batch())
    assert torch.equal(torch.random.get_rng_state(), state)


def test_linear_and_constant_schedules() -> None:
    linear = dropbp.apply(tiny("llama"), drop_rate=0.6, schedule="linear", warmup_steps=10)
    constant = dropbp.apply(tiny("llama"), drop_rate=0.6)
    assert not any(linear.sample().any() for _ in range(50))  # rate 0 at step 0: nothing dropped
    seen = []
    for _ in range(16):
        seen.append((linear.rates.copy(), constant.rates.copy()))
        linear.step()
        constant.step()
    for step, (rates, constant_rates) in enumerate(seen):  # 0 at step 0, 0.3 at step 5, 0.6 from step 10
        np.testing.assert_allclose(rates, 0.06 * min(step, 10), atol=1e-12)
        np.testing.assert_allclose(constant_rates, 0.6)


def test_peft_lora_adapters_follow_the_mask() -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny("llama"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    controller = dropbp.apply(model)
    assert [b.name.split("layers.")[1] for b in controller.branches] == ["0.attn", "0.mlp", "1.attn", "1.mlp"]
    controller.set_mask([True, False, False, False])
    backward(model, batch())
    lora = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert len(lora) == 8
    for name, p in lora.items():
        if ".layers.0." in name:
            assert p.grad is None, name
        else:
            assert p.grad is not None, name
    assert float(lora["base_model.model.model.layers.1.self_attn.q_proj.lora_B.default.weight"].grad.abs().sum()) > 0
    assert not hasattr(controller.remove().base_model.model, "_dropbp")


def test_errors_are_value_errors_and_leave_the_model_untouched() -> None:
    assert issubclass(DropBPError, ValueError)
    plain = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    with pytest.raises(DropBPError, match="self_attn") as error:
        dropbp.apply(plain)
    assert "mlp" in str(error.value) and "ModuleList" in str(error.value)
    assert hook_count(plain) == 0 and not hasattr(plain, "_dropbp")

    model = tiny("llama")
    for bad in ({"drop_rate": 0.95}, {"allocation": "greedy"}, {"schedule": "linear"}, {"schedule": "cosine"},
                {"drop_rate": -0.1}, {"cap": 1.0}, {"rate_step": 0.0}):
        with pytest.raises(DropBPError):
            dropbp.apply(model, **bad)
        with pytest.raises(ValueError):
            DropBPConfig(**bad)
        assert hook_count(model) == 0 and not hasattr(model, "_dropbp"), bad

    model.model.layers[1].extra = nn.Linear(2, 2)  # a part of a layer no branch can own
    with pytest.raises(DropBPError, match="extra"):
        dropbp.apply(model)
    assert hook_count(model) == 0 and not hasattr(model, "_dropbp")
    del model.model.layers[1].extra

    controller = dropbp.apply(model)
    hooks = hook_count(model)
    with pytest.raises(DropBPError, match="already"):
        dropbp.apply(model)
    assert hook_count(model) == hooks and model._dropbp is controller


def test_state_dict_round_trip_continues_the_mask_sequence() -> None:
    controller = dropbp.apply(tiny("llama"), drop_rate=0.5, seed=7, schedule="linear", warmup_steps=4)
    for _ in range(3):
        controller.sample()
        controller.step()
    controller.target_rates = np.array([0.2, 0.4, 0.6, 0.8])
    state = json.loads(json.dumps(controller.state_dict()))
    expected = [controller.sample().tolist() for _ in range(10)]

    resumed = dropbp.apply(tiny("llama"), drop_rate=0.5, seed=99, schedule="linear", warmup_steps=4)
    resumed.load_state_dict(state)
    assert resumed.steps_done == 3
    np.testing.assert_allclose(resumed.rates, np.array([0.2, 0.4, 0.6, 0.8]) * 0.75)
    assert [resumed.sample().tolist() for _ in range(10)] == expected
    other = dropbp.apply(tiny("llama", layers=3))
    with pytest.raises(DropBPError):
        other.load_state_dict(state)


def test_lora_always_keeps_something_to_backpropagate() -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(tiny("llama"), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    model.train()
    controller = dropbp.apply(model, drop_rate=0.5, seed=0)
    data = batch()
    masks = []
    for _ in range(40):
        loss = model(**data).loss
        assert loss.requires_grad  # both attention branches dropped would leave nothing to train
        masks.append(controller.mask.copy())
    attention = np.array(masks)[:, [0, 2]]
    assert attention.any()  # attention branches are still dropped, just never both at once
    assert not attention.all(axis=1).any()


def test_a_hand_set_mask_survives_an_eval_forward() -> None:
    model = tiny("llama")
    controller = dropbp.apply(model, drop_rate=0.5)
    controller.set_mask([True, False, True, False])
    model.eval()
    model(**batch())
    model.train()
    model(**batch())
    assert controller.mask.tolist() == [True, False, True, False]
