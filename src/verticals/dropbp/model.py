"""Find the residual branches of a decoder by structure, and the `DropBP` controller over them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from verticals.dropbp.allocation import allocate, collective_device, measure_sensitivity
from verticals.dropbp.branch import Branch
from verticals.dropbp.config import DropBPConfig, DropBPError
from verticals.dropbp.fidelity import Fidelity, check_fidelity, expected_cosine

ATTENTION = ("self_attn", "attn", "attention", "self_attention")
MLP = ("mlp", "feed_forward", "ffn")
ATTENTION_NORMS = ("input_layernorm", "ln_1", "attention_norm", "ln_attn")
MLP_NORMS = ("ln_2", "pre_feedforward_layernorm", "post_feedforward_layernorm", "ffn_norm")
NO_PARAMETERS = ("resid_attn_dropout", "resid_mlp_dropout", "dropout")
# `post_attention_layernorm` closes the attention branch where a `pre_feedforward_layernorm` opens the MLP
# branch (Gemma 2/3); elsewhere (Llama, Qwen2, Mistral, Gemma, Phi-3) it is the MLP branch's pre-norm.
AMBIGUOUS_NORM = "post_attention_layernorm"


def find_branches(model: nn.Module, seq_len: int = 512) -> list[Branch]:
    """The attention and MLP branches of every decoder layer, in depth order (nothing is changed).

    Raises:
        DropBPError: no list of decoder layers, or a layer with children that cannot be placed.
    """
    layer_lists = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList)
                   and len(m) > 0 and all(_child(layer, ATTENTION) and _child(layer, MLP) for layer in m)]
    if not layer_lists:
        raise DropBPError(
            f"cannot find decoder layers in {type(model).__name__}: looked for a ModuleList whose layers have an "
            f"attention child named one of {ATTENTION} and an MLP child named one of {MLP}")
    attention_width = _attention_width(model)
    branches: list[Branch] = []
    for list_name, layers in layer_lists:
        for index, layer in enumerate(layers):
            for kind, modules in zip(("attn", "mlp"), _split(layer, f"{list_name}.{index}")):
                params = [p for m in modules for p in m.parameters()]
                flops = 2.0 * sum(p.numel() for p in params if p.dim() == 2)
                if kind == "attn":
                    flops += 4.0 * seq_len * attention_width  # scores and weighted sum, per token
                branches.append(Branch(f"{list_name}.{index}.{kind}", modules, flops))
    return branches


def _child(layer: nn.Module, names: Iterable[str]) -> nn.Module | None:
    return next((getattr(layer, n) for n in names if isinstance(getattr(layer, n, None), nn.Module)), None)


def _split(layer: nn.Module, where: str) -> tuple[list[nn.Module], list[nn.Module]]:
    """Modules of the attention branch and of the MLP branch of one decoder layer."""
    children = dict(layer.named_children())
    gemma_style = "pre_feedforward_layernorm" in children
    attention, mlp, unknown = [], [], []
    for name, child in children.items():
        if name in ATTENTION or name in ATTENTION_NORMS or (name == AMBIGUOUS_NORM and gemma_style):
            attention.append(child)
        elif name in MLP or name in MLP_NORMS or name == AMBIGUOUS_NORM:
            mlp.append(child)
        elif name in NO_PARAMETERS or not any(True for _ in child.parameters()):
            continue
        else:
            unknown.append(name)
    if unknown:
        raise DropBPError(
            f"cannot place {unknown} of {where} ({type(layer).__name__}) in a residual branch: known attention parts "
            f"are {ATTENTION + ATTENTION_NORMS}, MLP parts {MLP + MLP_NORMS + (AMBIGUOUS_NORM,)}")
    return attention, mlp


def _attention_width(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    if config is None:
        return 0
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    head_dim = getattr(config, "head_dim", None) or (hidden // heads if heads and hidden else 0)
    return int((heads or 0) * head_dim)


class DropBP:
    """Controls dropped backward passes on a model; made by `verticals.dropbp.apply`.

    A new mask is drawn before every forward pass the model makes in training mode (so each
    micro-batch of a gradient-accumulation step has its own), from a private generator seeded by
    `config.seed`: every DDP rank draws the same masks, so no rank waits for a gradient another
    rank never computes. `step()` advances the drop-rate schedule once per optimizer step.

    Attributes:
        branches (`list[Branch]`): the units, in depth order (attention then MLP per layer).
        sensitivities (`np.ndarray` or None): S_l after `calibrate`.
    """

    def __init__(self, model: nn.Module, branches: list[Branch], config: DropBPConfig) -> None:
        self.model, self.branches, self.config = model, branches, config
        self.generator = torch.Generator().manual_seed(config.seed)
        self.steps_done = 0
        self.sensitivities: np.ndarray | None = None
        self.target_rates = np.full(len(branches), config.rate)  # auto: 0 until `calibrate` measured
        self.fidelity: Fidelity | None = None
        self.sampling = True
        for branch in branches:
            branch.attach()
        self._hook = model.register_forward_pre_hook(self._before_forward)

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.branches]

    @property
    def flops(self) -> np.ndarray:
        return np.array([b.flops for b in self.branches])

    @property
    def rates(self) -> np.ndarray:
        """Drop rate of each branch at the current step (after the schedule)."""
        if self.config.schedule == "linear":
            return self.target_rates * min(1.0, self.steps_done / self.config.warmup_steps)
        return self.target_rates.copy()

    @property
    def mask(self) -> np.ndarray:
        """Which branches the last forward pass dropped."""
        return np.array([b.dropped for b in self.branches])

    def predicted_speedup(self, rate: float) -> float:
        """Step-time speed-up the FLOPs model predicts at a uniform `rate` (the LM head's backward stays)."""
        from verticals.dropbp.fidelity import _speedups

        return float(_speedups(self, [rate])[0])

    def step(self) -> None:
        """One optimizer step done: advance the schedule."""
        self.steps_done += 1

    def sample(self) -> np.ndarray:
        """Draw the drop mask for the next forward pass (independent Bernoulli per branch)."""
        draws = torch.rand(len(self.branches), generator=self.generator).numpy()
        mask = draws < self.rates
        trainable = np.array([any(p.requires_grad for p in b.parameters()) for b in self.branches])
        if trainable.any() and not (trainable & ~mask).any() and not self._trainable_outside_branches():
            # Nothing trainable would get a gradient and backward() would fail (LoRA with frozen head):
            # keep one trainable branch, drawn from the private generator so every rank keeps the same.
            candidates = np.flatnonzero(trainable)
            mask[candidates[int(torch.randint(len(candidates), (1,), generator=self.generator))]] = False
        for branch, dropped in zip(self.branches, mask):
            branch.dropped = bool(dropped)
        return mask

    def _trainable_outside_branches(self) -> bool:
        inside = {id(p) for b in self.branches for p in b.parameters()}
        return any(p.requires_grad for p in self.model.parameters() if id(p) not in inside)

    def set_mask(self, dropped: Iterable[bool]) -> None:
        """Fix the mask by hand (sampling stops until `resume_sampling`)."""
        self.sampling = False
        for branch, value in zip(self.branches, dropped, strict=True):
            branch.dropped = bool(value)

    def resume_sampling(self) -> None:
        self.sampling = True

    def calibrate(self, loss_fn: Callable[[Any], torch.Tensor], batches: Iterable[Any]) -> np.ndarray | None:
        """Set the drop rates from probe batches; returns the sensitivities measured (None if none were).

        With a numeric `drop_rate`: measure sensitivities and allocate per-branch rates from them
        (greedy, FLOPs budget). With `drop_rate="auto"`: first measure the gradient's fidelity at each
        rate of `GRID` (one backward pass per rate and batch, `check_fidelity`) and take the highest
        rate whose expected gradient keeps a cosine of `min_cosine` or more with the full gradient on
        every batch (0: DropBP stays off), uniform; then, only with `allocation="sensitivity"`,
        allocate by sensitivity at that rate, kept when its expected gradient is at least as faithful.

        `loss_fn(batch)` runs the model and returns a scalar loss. Gradients are zeroed afterwards.
        Under `torch.distributed`, sensitivities are averaged over ranks and `auto` takes the lowest
        cosines over ranks, so every rank chooses the same rates.
        """
        batches = list(batches)
        target = self.config.rate
        if self.config.auto:
            found = check_fidelity(self, loss_fn, batches, masks=0, min_cosine=self.config.min_cosine,
                                   seed=self.config.seed)
            lows = _lowest_over_ranks([r.cosine_low for r in found.rates])  # every rank must choose alike
            rows = tuple(replace(r, cosine_low=low) for r, low in zip(found.rates, lows))
            good = [r.rate for r in rows if r.cosine_low >= self.config.min_cosine and r.rate <= self.config.cap]
            self.fidelity = replace(found, rates=rows, chosen=max(good) if good else 0.0)
            target = self.fidelity.chosen
            self.target_rates = np.full(len(self.branches), target)
            if self.config.allocation != "sensitivity" or target == 0:
                return None
        was_sampling = self.sampling
        try:
            self.sensitivities = measure_sensitivity(self, loss_fn, batches)
        finally:
            self.set_mask([False] * len(self.branches))
            self.sampling = was_sampling
        allocated = allocate(self.sensitivities, self.flops, target, cap=self.config.cap,
                             step=self.config.rate_step, seed=self.config.seed)
        if self.fidelity is not None:
            uniform = next(r.cosine_low for r in self.fidelity.rates if r.rate == target)
            allocated_cosine = expected_cosine(self, loss_fn, batches, allocated, seed=self.config.seed)
            if _lowest_over_ranks([allocated_cosine])[0] < uniform:
                return self.sensitivities  # by sensitivity the gradient would be less faithful: uniform it stays
        self.target_rates = allocated
        return self.sensitivities

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue with the same rates and masks."""
        return {"steps_done": self.steps_done, "target_rates": self.target_rates.tolist(),
                "sensitivities": None if self.sensitivities is None else self.sensitivities.tolist(),
                "generator": self.generator.get_state().tolist(), "config": self.config.to_dict(),
                "fidelity": None if self.fidelity is None else self.fidelity.to_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["target_rates"]) != len(self.branches):
            raise DropBPError(f"the saved DropBP state has {len(state['target_rates'])} branches, "
                              f"this model {len(self.branches)}")
        self.steps_done = int(state["steps_done"])
        self.target_rates = np.array(state["target_rates"], dtype=float)
        self.sensitivities = None if state["sensitivities"] is None else np.array(state["sensitivities"])
        self.generator.set_state(torch.tensor(state["generator"], dtype=torch.uint8))
        self.fidelity = Fidelity.from_dict(state["fidelity"]) if state.get("fidelity") else None

    def remove(self) -> nn.Module:
        """Take DropBP off the model and return it (a plain model again)."""
        for branch in self.branches:
            branch.detach()
            branch.dropped = False
        self._hook.remove()
        if getattr(self.model, "_dropbp", None) is self:
            del self.model._dropbp
        return self.model

    def _before_forward(self, module: nn.Module, args: object) -> None:
        if module.training and self.sampling:  # in eval mode branches never drop (see Branch._enter)
            self.sample()


def _lowest_over_ranks(values: list[float]) -> list[float]:
    """`values`, each the lowest over the ranks of a `torch.distributed` run (as they are in one process)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return values
    shared = torch.tensor(values, dtype=torch.float64, device=collective_device())
    torch.distributed.all_reduce(shared, op=torch.distributed.ReduceOp.MIN)
    return shared.cpu().tolist()


def apply(model: nn.Module, config: DropBPConfig | None = None, **settings: Any) -> DropBP:
    """Put DropBP on `model` (a Hugging Face decoder, plain or wrapped by peft) and return its controller.

    Args:
        model: the model to train; it is changed in place (hooks only; parameters keep their names).
        config: a `DropBPConfig`; keyword `settings` build one or override its fields.

    Raises:
        DropBPError: bad settings, DropBP already applied, or no branches found. Nothing is changed then.

    Example:
        >>> from transformers import LlamaConfig, LlamaForCausalLM
        >>> model = LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        ...                                      num_attention_heads=4, vocab_size=64))
        >>> dropbp = apply(model, drop_rate=0.5)
        >>> len(dropbp.branches), float(dropbp.rates.mean())
        (4, 0.5)
        >>> dropbp.remove() is model
        True
    """
    from dataclasses import fields

    unknown = sorted(set(settings) - {f.name for f in fields(DropBPConfig)})
    if unknown:
        raise DropBPError(f"unknown DropBP setting {unknown[0]!r}; the settings are "
                          f"{', '.join(f.name for f in fields(DropBPConfig))}")
    config = replace(config, **settings) if config is not None else DropBPConfig(**settings)
    if getattr(model, "_dropbp", None) is not None:
        raise DropBPError("DropBP is already applied to this model; call .remove() on its controller first")
    branches = find_branches(model, config.seq_len)
    controller = DropBP(model, branches, config)
    model._dropbp = controller  # type: ignore[assignment]
    return controller
