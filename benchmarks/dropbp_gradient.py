"""How far is DropBP's gradient from the full gradient? Bundled SmolLM2-135M, LoRA on every linear layer, CPU.

DropBP rests on a premise (the paper's appendix, on LLaMA2-7B): short paths through the residual
network carry most of the gradient, so leaving the Jacobian of dropped branches out of the backward
pass changes the gradient little. This script measures that premise on one batch of the convergence
task. It computes the full gradient g once, then the gradient under `--masks` random DropBP masks per
drop rate, and reports, per rate:

- the mean cosine between a kept branch's DropBP gradient and the same branch's full gradient;
- the cosine between the DropBP gradient averaged over the masks and g, over every adapter: the
  direction the optimizer follows on average (1.0 would mean unbiased). A mean of few masks also
  carries sampling noise, which lowers this cosine, most at high rates; the noise check (cosine
  between the means of the first and second half of the masks) says how much;
- the mean cosine of kept branches in the first, middle and last third of the layers;
- a check: the cosine of the last branch when kept, which nothing follows, so it must be 1.000
  (nan when no mask kept it, likely at high rates).

LoRA dropout is off. The B matrices start at small random values, so every adapter has a gradient;
`--adapter` measures at a trained point instead (the end of a convergence run, say), with that
adapter's rank, alpha and targets.

    .venv/bin/python benchmarks/dropbp_gradient.py                    # breast-cancer chat examples
    .venv/bin/python benchmarks/dropbp_gradient.py --task radiology --plot /tmp/g.png
    .venv/bin/python benchmarks/dropbp_gradient.py --task radiology --rates 0.5 --adapter RUN/rate-0.5
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dropbp_speed import DOCS, LORA_TARGETS, TASKS  # noqa: E402


def _network(task: str, adapter: Path | None, seed: int):  # type: ignore[no-untyped-def]
    """The bundled model with LoRA on every linear layer (or `adapter`'s), DropBP applied, and one batch."""
    import torch

    from verticals import dropbp
    from verticals.finetune import trainable
    from verticals.finetune.config import FinetuneConfig
    from verticals.finetune.data import collate, tokenize
    from verticals.llm.cli import quiet_transformers
    from verticals.llm.local import LocalModel

    quiet_transformers()
    local = LocalModel.bundled()
    lora = {"lora_targets": LORA_TARGETS["all"]}
    if adapter is not None:  # the adapter's own rank, alpha and targets
        saved = json.loads((adapter / "adapter_config.json").read_text())
        lora = {"lora_r": saved["r"], "lora_alpha": saved["lora_alpha"],
                "lora_targets": tuple(sorted(saved["target_modules"]))}
    network = trainable(local.model, FinetuneConfig(lora_dropout=0.0, seed=seed, **lora))
    if adapter is not None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        weights = load_file(str(adapter / "adapter_model.safetensors"))
        loaded = set_peft_model_state_dict(network, weights)
        adapters = [n for n, p in network.named_parameters() if p.requires_grad]
        if loaded.unexpected_keys or len(weights) != len(adapters):
            raise SystemExit(f"{adapter} does not fit: {len(weights)} tensors for {len(adapters)} adapter weights")
    else:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, parameter in network.named_parameters():
                if "lora_B" in name:  # at zero, no lora_A would get a gradient
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.01)
    controller = dropbp.apply(network, drop_rate=0.5)
    train, _ = TASKS[task][0]()
    batch = collate([tokenize(r, local.tokenizer, 512) for r in train[:4]], local.tokenizer.pad_token_id or 0)
    return network, controller, batch


def measure(task: str, rates: list[float], masks: int, adapter: Path | None = None,
            seed: int = 0) -> tuple[list[str], dict[float, dict]]:
    """Per drop rate: cosines of DropBP gradients (per mask, and averaged over masks) with the full gradient."""
    import torch

    from verticals.finetune.loss import lm_loss
    from verticals.progress import progress_bar

    network, controller, batch = _network(task, adapter, seed)
    trainable = [[p for p in b.parameters() if p.requires_grad] for b in controller.branches]
    trainable = [ps if ps else None for ps in trainable]  # a branch without adapters (attention-only LoRA) has none

    def gradient(mask: np.ndarray) -> list[torch.Tensor | None]:
        controller.set_mask(mask.tolist())
        network.zero_grad(set_to_none=True)
        loss = lm_loss(network, batch)[0]
        if loss.requires_grad:  # False only if the mask dropped every branch
            loss.backward()
        return [torch.cat([p.grad.flatten() for p in ps]) if ps and ps[0].grad is not None else None
                for ps in trainable]

    def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(torch.nn.functional.cosine_similarity(a, b, dim=0))

    n = len(controller.branches)
    rng = np.random.default_rng(seed)
    results = {}
    with progress_bar("gradients", 1 + masks * len(rates)) as bar:
        full = gradient(np.zeros(n, dtype=bool))
        bar(1)
        for rate in rates:
            cos = np.full((masks, n), np.nan)
            halves = [[torch.zeros_like(g) if g is not None else None for g in full] for _ in range(2)]  # two halves
            for k in range(masks):
                for i, g in enumerate(gradient(rng.random(n) < rate)):
                    if g is not None:
                        cos[k, i] = cosine(g, full[i])
                        halves[2 * k // masks][i] += g
                bar(1)
            first, second = (torch.cat([g for g in h if g is not None]) for h in halves)
            mean, whole = (first + second) / masks, torch.cat([g for g in full if g is not None])
            per_branch = [float(np.nanmean(c)) if not np.isnan(c).all() else float("nan") for c in cos.T]
            results[rate] = {"kept": float(np.nanmean(cos)), "expected": cosine(mean, whole),
                             "halves": cosine(first, second), "norm": float(whole.norm()),
                             "expected_norm": float(mean.norm()),
                             "thirds": [float(np.nanmean(c)) for c in np.array_split(cos, 3, axis=1)],
                             "last": per_branch[-1], "per_branch": per_branch}
    return controller.names, results


def table(results: dict[float, dict]) -> str:
    lines = ["| drop rate | mean cos, kept branch vs full | cos, mean DropBP gradient vs full | noise check: cos, "
             "mean of first half of masks vs second | first third | middle third | last third | last branch "
             "(check: 1.000) | norm: full gradient | norm: mean DropBP gradient |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for rate, r in results.items():
        first, middle, last = r["thirds"]
        lines.append(f"| {rate} | {r['kept']:.3f} | {r['expected']:.3f} | {r['halves']:.3f} | {first:.3f} | "
                     f"{middle:.3f} | {last:.3f} | "
                     f"{r['last']:.3f} | {r['norm']:.3f} | {r['expected_norm']:.3f} |")
    return "\n".join(lines)


def plot(names: list[str], results: dict[float, dict], path: Path, task: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for rate, r in results.items():
        ax.plot(np.arange(len(names)) / 2, r["per_branch"], marker=".", label=f"drop rate {rate}")
    ax.set_xlabel("decoder layer (attention at n, MLP at n + 0.5)")
    ax.set_ylabel("cos(kept branch's DropBP gradient, full)")
    ax.set_ylim(-0.1, 1.05)
    ax.set_title(f"DropBP vs full gradient: SmolLM2-135M LoRA, {TASKS[task][1]}", fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), default="breast_cancer")
    parser.add_argument("--rates", default="0.125,0.25,0.5,0.875")
    parser.add_argument("--masks", type=int, default=32, help="random masks per drop rate")
    parser.add_argument("--plot", type=Path, default=DOCS / "dropbp_gradient.png")
    parser.add_argument("--adapter", type=Path, help="a trained LoRA adapter folder to measure at")
    args = parser.parse_args()
    if args.adapter is not None and not (args.adapter / "adapter_model.safetensors").is_file():
        parser.error(f"{args.adapter} holds no adapter_model.safetensors")
    names, results = measure(args.task, [float(r) for r in args.rates.split(",")], args.masks, args.adapter)
    print(table(results))
    plot(names, results, args.plot, args.task)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
