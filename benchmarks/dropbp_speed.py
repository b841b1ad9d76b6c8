"""DropBP on the bundled SmolLM2-135M, CPU: step time vs the FLOPs model, and convergence.

Part 1 (speed): sequence 256, batch 4, {LoRA, full} x drop rate {0, 0.5, 0.875}. Each row runs in
its own process (so peak RSS is its own): median forward, backward and step time, peak memory,
speed-up over rate 0, and the speed-up the FLOPs model predicts from rate 0's measured forward and
backward times. The backward of the LM head and embeddings cannot be dropped; its share of the
backward is taken from FLOPs (LoRA: activation gradients only; full: activation + weight gradients).
One more pair of rows measures the LM head run only where loss is read (long prompt, short answer,
as in SERSAL's reverse tuning) against the head run over every position.

Part 2 (convergence): 300 LoRA steps on chat examples, drop rate 0 and 0.5; held-out loss at the
end and a PNG of training loss against wall-clock time. `--task breast_cancer` (default): scikit-learn's
breast-cancer table ("... Is the tumour malignant?" -> "Yes."/"No."). `--task radiology`: radlabels'
synthetic chest X-ray reports -> the findings they describe as present or absent (answers of about 20
tokens). Adapters go on every linear layer of the decoder, as
in the paper's recipe (`--lora-targets attention` puts them on q/k/v/o only: then at rate 0.5 every
adapter sits in an attention branch and learns on about half of the steps).

    .venv/bin/python benchmarks/dropbp_speed.py                 # both parts (about 35 minutes)
    .venv/bin/python benchmarks/dropbp_speed.py --part speed    # part 1 only
    .venv/bin/python benchmarks/dropbp_speed.py --part speed --methods full --steps 16   # fewer rows, longer
    .venv/bin/python benchmarks/dropbp_speed.py --part convergence --task radiology --plot /tmp/r.png
    .venv/bin/python benchmarks/dropbp_speed.py --quick         # smoke run
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


# -- part 1: one row, in a child process -----------------------------------------------------------
def measure_row(method: str, rate: float, steps: int, head: str) -> dict:
    import torch

    from verticals import dropbp
    from verticals.finetune import trainable
    from verticals.finetune.config import FinetuneConfig
    from verticals.finetune.data import IGNORE
    from verticals.finetune.loss import lm_loss
    from verticals.llm.cli import quiet_transformers
    from verticals.llm.local import LocalModel

    quiet_transformers()
    torch.manual_seed(0)
    local = LocalModel.bundled()
    network = trainable(local.model, FinetuneConfig(method=method))
    controller = dropbp.apply(network, drop_rate=rate, seq_len=256) if rate > 0 else None
    optimizer = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], lr=1e-5)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 49000, (4, 256), generator=generator)
    labels = ids.clone()
    if head != "text":  # chat-like: a 252-token prompt and a 4-token answer carry the loss
        labels[:, :-4] = IGNORE
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
             "position_ids": torch.arange(256).expand(4, -1), "labels": labels}
    forward, backward, total, kept = [], [], [], []
    for step in range(steps + 1):
        t0 = time.perf_counter()
        loss = _full_head_loss(network, batch) if head == "all" else lm_loss(network, batch)[0]
        t1 = time.perf_counter()
        if step > 0:  # the share of branch FLOPs this step's mask kept (masks vary: 60 coin flips)
            kept.append(1.0 if controller is None else float((controller.flops * ~controller.mask).sum()
                                                              / controller.flops.sum()))
        if loss.requires_grad:
            loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        if step > 0:  # the first step warms up allocators and kernels
            forward.append(t1 - t0)
            backward.append(t2 - t1)
            total.append(t3 - t0)
    return {"method": method, "rate": rate, "head": head, "forward": statistics.median(forward),
            "backward": statistics.median(backward), "step": statistics.median(total),
            "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, "kept": statistics.median(kept),
            "head_share": _head_backward_share(local.model.config)}


def _full_head_loss(network, batch):  # type: ignore[no-untyped-def]
    """The usual way: logits at every position, loss read at a few."""
    import torch

    logits = network(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     position_ids=batch["position_ids"], use_cache=False).logits
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                             batch["labels"][:, 1:].reshape(-1), ignore_index=-100)


def _head_backward_share(config) -> float:  # type: ignore[no-untyped-def]
    """Share of backward FLOPs that DropBP cannot drop (LM head; the embedding lookup is free)."""
    h, v, i, layers = config.hidden_size, config.vocab_size, config.intermediate_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    block = 2 * (h * h * 2 + h * kv * 2 + 3 * h * i)  # forward FLOPs per token of one decoder layer's linears
    attention = 4 * 256 * h  # scores and weighted sum at sequence 256
    per_token_branches = layers * (block + attention)
    head = 2 * h * v
    # LoRA back-propagates activation gradients only (about 1x forward), full fine-tuning weight gradients too
    # (about 2x, the tied head included): both parts scale alike, so the share is the forward share.
    return head / (head + per_token_branches)


def speed(quick: bool, methods: tuple[str, ...] = ("lora", "full"), steps: int = 6,
          rates: tuple[float, ...] = (0.0, 0.5, 0.875), heads: bool = True) -> list[dict]:
    steps = 2 if quick else steps
    plan = [(m, r, "text") for m in methods for r in rates]
    if "lora" in methods and heads:
        plan += [("lora", 0.0, "all"), ("lora", 0.0, "loss")]
    rows = []
    for method, rate, head in plan:
        out = subprocess.run([sys.executable, __file__, "--row", method, str(rate), head, str(steps)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  measured {method} rate {rate} head {head}: step {rows[-1]['step']:.2f} s", file=sys.stderr)
    return rows


def speed_table(rows: list[dict]) -> str:
    lines = ["| method | drop rate | forward s | backward s | step s | peak RSS GB | speed-up | predicted | "
             "measured / predicted | target >= 0.9 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in (r for r in rows if r["head"] == "text"):
        base = next(r for r in rows if r["method"] == row["method"] and r["rate"] == 0 and r["head"] == "text")
        share = row["head_share"]
        predicted_step = base["step"] - base["backward"] * (1 - share) * (1 - row["kept"])
        predicted = base["step"] / predicted_step
        measured = base["step"] / row["step"]
        ok = "PASS" if measured / predicted >= 0.9 else "FAIL"
        lines.append(f"| {row['method']} | {row['rate']} | {row['forward']:.2f} | {row['backward']:.2f} | "
                     f"{row['step']:.2f} | {row['peak_gb']:.2f} | {measured:.2f}x | {predicted:.2f}x | "
                     f"{measured / predicted:.2f} | {ok} |")
    everywhere = next((r for r in rows if r["head"] == "all"), None)
    selective = next((r for r in rows if r["head"] == "loss"), None)
    if everywhere is None or selective is None:
        return "\n".join(lines)
    lines += ["", "| LoRA, rate 0, 252-token prompt + 4-token answer | forward s | backward s | step s | peak RSS GB |"
              " speed-up |", "|---|---|---|---|---|---|"]
    for name, row in (("LM head at every position", everywhere), ("LM head only where loss is read", selective)):
        lines.append(f"| {name} | {row['forward']:.2f} | {row['backward']:.2f} | {row['step']:.2f} | "
                     f"{row['peak_gb']:.2f} | {everywhere['step'] / row['step']:.2f}x |")
    return "\n".join(lines)


# -- part 2: convergence ------------------------------------------------------------------------------
def breast_cancer_chats(seed: int = 0) -> tuple[list[dict], list[dict]]:
    import numpy as np
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    names = [n for n in data.feature_names if n.startswith("mean")]
    columns = [list(data.feature_names).index(n) for n in names]
    order = np.random.default_rng(seed).permutation(len(data.target))
    chats = []
    for i in order:
        facts = "; ".join(f"{n}: {data.data[i, c]:.3g}" for n, c in zip(names, columns))
        question = f"A breast mass was measured from a fine-needle aspirate. {facts}. Is the tumour malignant?"
        answer = "Yes." if data.target[i] == 0 else "No."  # scikit-learn codes malignant as 0
        chats.append({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})
    return chats[:-64], chats[-64:]


def radiology_chats(seed: int = 0) -> tuple[list[dict], list[dict]]:
    """radlabels' 1,000 synthetic chest X-ray reports -> "which findings does it describe?".

    Unlike the breast-cancer answer (one token of yes/no, whose loss sits at the class balance until
    the model learns to read the numbers), this answer is a list of several tokens that grows with
    the report, closer to the instruction tuning of the paper.
    """
    import importlib.util

    import numpy as np

    spec = importlib.util.find_spec("radlabels")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("radlabels is not installed: run `make install`")
    samples = Path(spec.submodule_search_locations[0]) / "samples"
    labels = json.loads((samples / "synthetic_labels.json").read_text())
    chats = []
    for name in sorted(labels):
        report = (samples / "synthetic_reports" / f"{name}.txt").read_text().strip()
        present = [f.replace("_", " ") for f, v in sorted(labels[name].items()) if v.endswith("present")]
        absent = [f.replace("_", " ") for f, v in sorted(labels[name].items()) if v.endswith("absent")]
        answer = " ".join(part for part in (f"Present: {', '.join(present)}." if present else "",
                                            f"Absent: {', '.join(absent)}." if absent else "") if part)
        question = f"Which findings does this chest X-ray report describe as present or absent?\n\n{report}"
        chats.append({"messages": [{"role": "user", "content": question},
                                   {"role": "assistant", "content": answer or "No findings are described."}]})
    order = np.random.default_rng(seed).permutation(len(chats))
    chats = [chats[i] for i in order]
    return chats[:-64], chats[-64:]


TASKS = {"breast_cancer": (breast_cancer_chats, "breast-cancer chat examples"),
         "radiology": (radiology_chats, "radiology report findings")}

LORA_TARGETS = {"all": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
                "attention": ("q_proj", "k_proj", "v_proj", "o_proj")}


def convergence(quick: bool, out_root: Path, lora_targets: str = "all", rates: tuple[float, ...] = (0.0, 0.5),
                allocation: str = "uniform", task: str = "breast_cancer") -> list[dict]:
    import torch

    from verticals.finetune import FinetuneConfig, finetune
    from verticals.finetune.data import collate, tokenize
    from verticals.finetune.loss import lm_loss
    from verticals.llm.cli import quiet_transformers
    from verticals.llm.local import LocalModel

    quiet_transformers()
    train, held_out = TASKS[task][0]()
    steps = 20 if quick else 300
    results = []
    for rate in rates:
        out = out_root / f"rate-{rate}"
        config = FinetuneConfig(steps=steps, batch_size=4, lr=2e-4, warmup_steps=10, drop_rate=rate,
                                drop_allocation=allocation,
                                save_every=steps, seed=0, lora_targets=LORA_TARGETS[lora_targets])
        result = finetune(LocalModel.bundled(), train, out, config, progress=True)
        tuned = LocalModel(LocalModel.bundled().path, adapter=out)
        examples = [tokenize(r, tuned.tokenizer, 512) for r in held_out]
        with torch.no_grad():
            losses = [lm_loss(tuned.model, collate(examples[i : i + 8], tuned.tokenizer.pad_token_id or 0))[0].item()
                      for i in range(0, len(examples), 8)]
        log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
        results.append({"rate": rate, "seconds": result.seconds, "held_out_loss": statistics.mean(losses),
                        "last_train_loss": statistics.mean(e["loss"] for e in log[-30:]), "log": log})
    return results


def convergence_table(results: list[dict]) -> str:
    base = results[0]
    lines = ["| drop rate | wall-clock s | speed-up | train loss (last 30 steps) | held-out loss | "
             "held-out vs rate 0 | target within 3% |", "|---|---|---|---|---|---|---|"]
    for r in results:
        change = r["held_out_loss"] / base["held_out_loss"] - 1
        lines.append(f"| {r['rate']} | {r['seconds']:.0f} | {base['seconds'] / r['seconds']:.2f}x | "
                     f"{r['last_train_loss']:.4f} | {r['held_out_loss']:.4f} | {change:+.1%} | "
                     f"{'PASS' if abs(change) <= 0.03 else 'FAIL'} |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path, task: str = "breast_cancer") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        window = 10
        losses = [e["loss"] for e in r["log"]]
        smooth = [statistics.mean(losses[max(0, i - window + 1) : i + 1]) for i in range(len(losses))]
        ax.plot([e["elapsed"] / 60 for e in r["log"]], smooth, label=f"drop rate {r['rate']}")
    ax.set_xlabel("wall-clock time (minutes)")
    ax.set_ylabel("training loss (10-step mean)")
    ax.set_title(f"SmolLM2-135M LoRA on {TASKS[task][1]}, CPU")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("speed", "convergence", "all"), default="all")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--methods", default="lora,full", help="speed: lora, full or both")
    parser.add_argument("--steps", type=int, default=6, help="speed: measured steps per row (after one warm-up)")
    parser.add_argument("--speed-rates", default="0,0.5,0.875",
                        help="speed: drop rates to time (the first is the base); a list other than the default "
                             "skips the LM-head rows")
    parser.add_argument("--lora-targets", choices=sorted(LORA_TARGETS), default="all",
                        help="convergence: LoRA on every linear layer (default) or on attention only")
    parser.add_argument("--rates", default="0,0.5", help="convergence: drop rates to train at (the first is the base)")
    parser.add_argument("--allocation", choices=("uniform", "sensitivity"), default="uniform",
                        help="convergence: how DropBP spreads the rate over branches")
    parser.add_argument("--task", choices=sorted(TASKS), default="breast_cancer",
                        help="convergence: the chat examples to train on")
    parser.add_argument("--plot", type=Path, default=DOCS / "dropbp_convergence.png", help="convergence: PNG path")
    parser.add_argument("--row", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not set(args.methods.split(",")) <= {"lora", "full"}:
        parser.error(f"--methods takes lora, full or lora,full, got {args.methods!r}")
    if args.row:
        method, rate, head, steps = args.row
        print(json.dumps(measure_row(method, float(rate), int(steps), head)))
        return
    if args.part in ("speed", "all"):
        rates = tuple(float(r) for r in args.speed_rates.split(","))
        print(speed_table(speed(args.quick, tuple(args.methods.split(",")), args.steps, rates,
                                heads=args.speed_rates == "0,0.5,0.875")))
    if args.part in ("convergence", "all"):
        import tempfile

        results = convergence(args.quick, Path(tempfile.mkdtemp(prefix="dropbp-convergence-")),
                              args.lora_targets, tuple(float(r) for r in args.rates.split(",")), args.allocation,
                              args.task)
        print(convergence_table(results))
        png = args.plot
        plot(results, png, args.task)
        print(f"plot: {png}")


if __name__ == "__main__":
    main()
