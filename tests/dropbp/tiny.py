"""Tiny random decoders built offline from transformers config classes, and small helpers for the DropBP tests."""

from __future__ import annotations

import torch
from torch import nn

VOCAB = 64
IDS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
COMMON = {"vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
          "num_key_value_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64, **IDS}

# name -> (config class, model class, config kwargs, layer-list path, attention-branch children, MLP-branch children)
ARCHS = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}, "model.layers",
              ("input_layernorm", "self_attn"), ("post_attention_layernorm", "mlp")),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}, "model.layers",
              ("input_layernorm", "self_attn"), ("post_attention_layernorm", "mlp")),
    "mistral": ("MistralConfig", "MistralForCausalLM", {}, "model.layers",
                ("input_layernorm", "self_attn"), ("post_attention_layernorm", "mlp")),
    "gemma": ("GemmaConfig", "GemmaForCausalLM", {"head_dim": 8}, "model.layers",
              ("input_layernorm", "self_attn"), ("post_attention_layernorm", "mlp")),
    "gemma3": ("Gemma3TextConfig", "Gemma3ForCausalLM", {"head_dim": 8}, "model.layers",
               ("input_layernorm", "self_attn", "post_attention_layernorm"),
               ("pre_feedforward_layernorm", "mlp", "post_feedforward_layernorm")),
    "phi3": ("Phi3Config", "Phi3ForCausalLM", {}, "model.layers",
             ("input_layernorm", "self_attn"), ("post_attention_layernorm", "mlp")),
    # a parallel block: one norm feeds attention and MLP (it sits in the attention branch)
    "phi": ("PhiConfig", "PhiForCausalLM", {}, "model.layers", ("input_layernorm", "self_attn"), ("mlp",)),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", None, "transformer.h", ("ln_1", "attn"), ("ln_2", "mlp")),
}


def tiny(arch: str = "llama", seed: int = 0, layers: int = 2, **overrides) -> nn.Module:
    """A random tiny causal LM in train mode (no dropout unless `overrides` ask for it), built under `seed`."""
    import transformers

    config_name, model_name, extra, *_ = ARCHS[arch]
    if extra is None:  # GPT-2 has its own names, and dropout on by default
        kwargs = {"n_embd": 32, "n_layer": layers, "n_head": 4, "vocab_size": VOCAB, "n_positions": 64,
                  "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, **IDS}
    else:
        kwargs = {**COMMON, "num_hidden_layers": layers, **extra}
    config = getattr(transformers, config_name)(**{**kwargs, **overrides})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(transformers, model_name)(config)
    return model.train()


def layer_list(model: nn.Module, arch: str) -> nn.ModuleList:
    return model.get_submodule(ARCHS[arch][3])


def batch(seed: int = 0, rows: int = 2, length: int = 8) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (rows, length), generator=generator)
    return {"input_ids": ids, "labels": ids.clone()}


def backward(model: nn.Module, data: dict[str, torch.Tensor]) -> dict[str, torch.Tensor | None]:
    """Zero grads, one forward/backward of the LM loss, and every parameter's gradient by name (None if none)."""
    model.zero_grad(set_to_none=True)
    model(**data).loss.backward()
    return {n: None if p.grad is None else p.grad.detach().clone() for n, p in model.named_parameters()}


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def detached(module: nn.Module, args: object, output: object) -> object:
    """A hand-built DropBP for the reference: the branch's output leaves the graph."""
    if isinstance(output, tuple):
        return (output[0].detach(), *output[1:])
    return output.detach()


def saved_tensors(model: nn.Module, data: dict[str, torch.Tensor]) -> int:
    count = 0

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal count
        count += 1
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(**data).loss
    loss.backward()
    return count
