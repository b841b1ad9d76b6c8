"""Yes/No scoring throughput of the bundled model: `choice_probs` vs a naive generate loop.

Measures, in one run on the bundled SmolLM2-135M-Instruct (float32, CPU):
  * rows/s of `LocalModel.choice_probs(prompts, ["Yes", "No"])` (no cache) on synthetic clinical prompts
    (~130 tokens each with the chat template, one shared system instruction), vs a naive loop that calls
    `model.model.generate(max_new_tokens=3, do_sample=False)` per prompt and parses Yes/No from the text;
  * achieved GFLOP/s of the scoring, vs float32 `torch.matmul` on the model's own linear layers
    (q, k, v, o, gate, up, down of layer 0) with M = max_batch_tokens rows of input, timed in the same run;
  * rows/s for a few `max_batch_tokens` values and thread counts (on a subset of the prompts).

FLOP accounting: 2 x (decoder parameters without the embedding) x tokens_computed (positions run through
the decoder, padding included, as `choice_logprobs` reports them) + 2 x (LM head parameters) x positions
whose logits are computed. Attention scores (QK^T, AV; ~4% more at these lengths) are not counted.

Run on a quiet machine (the last line says how much CPU other processes took meanwhile):
      .venv/bin/python benchmarks/llm_scoring.py            (~3.5 min on 2 cores)
      .venv/bin/python benchmarks/llm_scoring.py --quick    (smoke run, ~40 s)
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from verticals.llm import local
from verticals.llm.local import LocalModel

INSTRUCTION = (
    "You are a cardiologist reviewing heart clinic records: age, sex, symptoms, vital signs, lab values and "
    "stress test results. Decide if the patient has heart disease. Reply with one word: Yes or No."
)
QUESTION = "Does this patient have heart disease? Answer Yes or No."
CHEST_PAIN = ["typical angina", "atypical angina", "non-anginal pain", "asymptomatic"]
CHOICES = ["Yes", "No"]


def make_prompts(n: int, seed: int = 0) -> list[list[dict[str, str]]]:
    """Synthetic patient rows as chat prompts: shared system instruction, per-row features, question."""
    rng = np.random.default_rng(seed)
    prompts = []
    for _ in range(n):
        features = "; ".join([
            f"age: {rng.integers(29, 78)} years", f"sex: {rng.choice(['male', 'female'])}",
            f"chest pain type: {rng.choice(CHEST_PAIN)}", f"resting blood pressure: {rng.integers(94, 201)} mm Hg",
            f"cholesterol: {rng.integers(126, 565)} mg/dl", f"maximum heart rate: {rng.integers(71, 203)} bpm",
            f"ST depression: {rng.uniform(0, 6.2):.1f} mm",
        ])
        prompts.append([{"role": "system", "content": INSTRUCTION},
                        {"role": "user", "content": f"Patient: {features}.\n{QUESTION}"}])
    return prompts


class TokenCounter:
    """Wraps `choice_logprobs` as `LocalModel` calls it, to add up the positions it computes."""

    def __init__(self) -> None:
        self.tokens = self.logits = 0
        self.original = local.choice_logprobs

    def __call__(self, model, rows, choices, **kwargs):  # type: ignore[no-untyped-def]
        logprobs, computed = self.original(model, rows, choices, **kwargs)
        self.tokens += computed
        self.logits += len(rows) * (1 + sum(len(c) - 1 for c in choices)) + 1  # +1: the shared-prefix pass
        return logprobs, computed


def naive_loop(model: LocalModel, prompts: list) -> tuple[float, list[str]]:
    """Seconds and parsed answers of one `generate` call per prompt (greedy, 3 new tokens)."""
    tokenizer, answers = model.tokenizer, []
    start = time.perf_counter()
    for prompt in prompts:
        inputs = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)
        out = model.model.generate(**inputs, max_new_tokens=3, do_sample=False)
        text = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip().lower()
        answers.append("Yes" if text.startswith("yes") else "No" if text.startswith("no") else "?")
    return time.perf_counter() - start, answers


def scoring(model: LocalModel, prompts: list, max_batch_tokens: int, counter: TokenCounter) -> tuple[float, np.ndarray]:
    """Seconds and probabilities of `choice_probs` on `prompts`; computed positions go to `counter`."""
    model.max_batch_tokens = max_batch_tokens
    local.choice_logprobs = counter
    try:
        start = time.perf_counter()
        probs = model.choice_probs(prompts, CHOICES)
        return time.perf_counter() - start, probs
    finally:
        local.choice_logprobs = counter.original


def matmul_times(model: LocalModel, m: int, repeats: int) -> list[float]:
    """Seconds per pass over the 7 linear layers of one decoder layer, x of shape (m, in), `repeats` times."""
    layer = model.model.model.layers[0]
    weights = [lin.weight.detach() for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                                                  layer.self_attn.o_proj, layer.mlp.gate_proj, layer.mlp.up_proj,
                                                  layer.mlp.down_proj)]
    inputs = {w.shape[1]: torch.randn(m, w.shape[1], generator=torch.Generator().manual_seed(0)) for w in weights}
    times = []
    with torch.inference_mode():
        for i in range(repeats + 1):
            start = time.perf_counter()
            for w in weights:
                torch.matmul(inputs[w.shape[1]], w.t())
            if i:  # the first pass is a warm-up
                times.append(time.perf_counter() - start)
    return times


def busy_seconds() -> tuple[float, float]:
    """(CPU seconds taken on this machine by anyone, incl. the hypervisor's steal; by us); Linux only."""
    try:
        with open("/proc/stat") as stat:
            user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, stat.readline().split()[1:9])
    except (OSError, ValueError):
        return float("nan"), float("nan")
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK"), time.process_time()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer prompts, for a smoke run")
    parser.add_argument("--rows", type=int, help="prompts scored by choice_probs (default 256, quick 32)")
    parser.add_argument("--naive-rows", type=int, help="prompts for the generate loop (default 32, quick 4)")
    parser.add_argument("--sweep-rows", type=int, help="prompts per sweep setting (default 64, quick 8)")
    parser.add_argument("--max-batch-tokens", type=int, default=2048, help="for the headline run")
    parser.add_argument("--sweep", type=int, nargs="*", default=[512, 1024, 2048, 4096], help="max_batch_tokens")
    args = parser.parse_args()
    n_rows = args.rows or (32 if args.quick else 256)
    n_naive = min(n_rows, args.naive_rows or (4 if args.quick else 32))
    n_sweep = min(n_rows, args.sweep_rows or (8 if args.quick else 64))
    console = Console()

    model = LocalModel.bundled()
    start_wall, (start_all, start_own) = time.perf_counter(), busy_seconds()
    prompts = make_prompts(n_rows)
    default_threads = torch.get_num_threads()
    lengths = [len(model.prompt_ids(p)) for p in prompts]
    decoder = sum(p.numel() for p in model.model.model.parameters()) - model.model.model.embed_tokens.weight.numel()
    head = model.model.lm_head.weight.numel()
    console.print(f"{n_rows} prompts, {np.mean(lengths):.1f} tokens on average (min {min(lengths)}, max "
                  f"{max(lengths)}); decoder {decoder / 1e6:.1f}M + LM head {head / 1e6:.1f}M parameters; "
                  f"torch threads {default_threads}")

    def gflops(seconds: float, counter: TokenCounter) -> float:
        return 2 * (decoder * counter.tokens + head * counter.logits) / seconds / 1e9

    def matmul_rate(m: int, times: list[float]) -> float:
        return 2 * m * sum(w.numel() for w in model.model.model.layers[0].parameters() if w.dim() == 2) \
            / statistics.median(times) / 1e9

    scoring(model, make_prompts(4, seed=1), args.max_batch_tokens, TokenCounter())  # warm-up
    naive_loop(model, make_prompts(1, seed=1))
    # Interleaved rounds (naive, matmul, ours), so that load from other processes falls on all three alike.
    # choice_probs scores scoring_chunk_size (64) rows per backend call anyway: 4 calls of 64 rows = 1 of 256.
    rounds = max(1, min(4, n_naive, n_rows // model.scoring_chunk_size))
    naive_s = ours_s = 0.0
    naive_rows, naive_answers, probs, ref, counter = [], [], [], [], TokenCounter()
    for r in range(rounds):
        naive_rows += range(r, n_naive, rounds)
        seconds, answers = naive_loop(model, prompts[r:n_naive:rounds])
        naive_s, naive_answers = naive_s + seconds, naive_answers + answers
        ref += matmul_times(model, args.max_batch_tokens, 5)
        seconds, part = scoring(model, prompts[r * n_rows // rounds:(r + 1) * n_rows // rounds],
                                args.max_batch_tokens, counter)
        ours_s, probs = ours_s + seconds, probs + [part]
    ours_answers = [CHOICES[i] for i in np.concatenate(probs).argmax(axis=1)]
    agree = np.mean([answer == ours_answers[i] for i, answer in zip(naive_rows, naive_answers)])
    naive_rate, ours_rate = n_naive / naive_s, n_rows / ours_s
    ours_gf, ref_gf = gflops(ours_s, counter), matmul_rate(args.max_batch_tokens, ref)

    summary = Table(title=f"Yes/No scoring, bundled model, max_batch_tokens={args.max_batch_tokens}, "
                          f"{default_threads} threads")
    for column in ("measure", "value", "target", "result"):
        summary.add_column(column, justify="right")
    summary.add_row(f"naive generate loop ({n_naive} prompts)", f"{naive_rate:.2f} rows/s", "", "")
    summary.add_row(f"choice_probs ({n_rows} prompts)", f"{ours_rate:.2f} rows/s", "", "")
    summary.add_row("choice_probs / naive", f"{ours_rate / naive_rate:.2f}x", ">= 2x",
                    "PASS" if ours_rate >= 2 * naive_rate else "FAIL")
    summary.add_row("tokens computed (decoder / LM head)", f"{counter.tokens} / {counter.logits}", "", "")
    summary.add_row("choice_probs GFLOP/s", f"{ours_gf:.1f}", "", "")
    summary.add_row(f"float32 matmul GFLOP/s (M={args.max_batch_tokens})", f"{ref_gf:.1f}", "", "")
    summary.add_row("choice_probs / matmul", f"{ours_gf / ref_gf:.0%}", ">= 60%",
                    "PASS" if ours_gf >= 0.6 * ref_gf else "FAIL")
    summary.add_row(f"same answer as naive ({n_naive} prompts)", f"{agree:.0%}", "", "")
    console.print(summary)

    table = Table(title=f"choice_probs sweep on {n_sweep} prompts (matmul at M = max_batch_tokens, same threads)")
    for column in ("threads", "max_batch_tokens", "rows/s", "GFLOP/s", "matmul GFLOP/s", "of matmul"):
        table.add_column(column, justify="right")
    for threads in sorted({default_threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        for mbt in args.sweep:
            sweep_counter, ref = TokenCounter(), matmul_times(model, mbt, 5)
            seconds, _ = scoring(model, prompts[:n_sweep], mbt, sweep_counter)
            rate, ref_rate = gflops(seconds, sweep_counter), matmul_rate(mbt, ref + matmul_times(model, mbt, 5))
            table.add_row(str(threads), str(mbt), f"{n_sweep / seconds:.2f}", f"{rate:.1f}", f"{ref_rate:.1f}",
                          f"{rate / ref_rate:.0%}")
    torch.set_num_threads(default_threads)

    console.print(table)
    (all_s, own_s), wall = busy_seconds(), time.perf_counter() - start_wall
    others = ((all_s - start_all) - (own_s - start_own)) / (wall * (os.cpu_count() or 1))
    console.print(f"{wall:.0f} s; other processes (or VMs) took {max(others, 0):.0%} of the CPU meanwhile"
                  + (" (above ~5% the rates are noisy: rerun on a quiet machine)" if others > 0.05 else ""))


if __name__ == "__main__":
    main()
