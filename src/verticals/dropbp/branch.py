"""A residual branch that can skip its backward pass.

A branch is the modules of one residual sub-block (for Llama: `input_layernorm` + `self_attn`, or
`post_attention_layernorm` + `mlp`). When the branch is dropped for a step, each of its modules
runs under `torch.no_grad()`: the forward value is exact, no activations are kept, its parameters
(LoRA adapters included) get no gradient, and the gradient reaches earlier layers only through the
skip connection. This is done with forward hooks, not by replacing modules, so parameter names,
`state_dict` and `save_pretrained` stay those of the plain model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


@dataclass
class Branch:
    """One DropBP unit: a named group of modules, its FLOPs per token, and whether it is dropped now."""

    name: str
    modules: list[nn.Module]
    flops: float
    dropped: bool = False
    _handles: list[RemovableHandle] = field(default_factory=list, repr=False)
    _grad_modes: list[bool] = field(default_factory=list, repr=False)

    def attach(self) -> None:
        for module in self.modules:
            self._handles.append(module.register_forward_pre_hook(self._enter))
            self._handles.append(module.register_forward_hook(self._exit, always_call=True))

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def parameters(self) -> list[nn.Parameter]:
        return [p for module in self.modules for p in module.parameters()]

    def _enter(self, module: nn.Module, args: object) -> None:
        self._grad_modes.append(torch.is_grad_enabled())
        if self.dropped and module.training:
            torch.set_grad_enabled(False)

    def _exit(self, module: nn.Module, args: object, output: object) -> None:
        if self._grad_modes:
            torch.set_grad_enabled(self._grad_modes.pop())
