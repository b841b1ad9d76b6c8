"""DropBP gradient fidelity, exactly, per drop rate: what `finetune check-dropbp` and `--drop-rate auto` see.

For each task's chat examples, on the model given (default: the bundled SmolLM2-135M) with LoRA on
every linear layer at its initialisation (as a run starts), `verticals.finetune.check_dropbp`
measures on `--batches` batches of 4:

- cos expected: the cosine of the EXPECTED DropBP gradient (one backward pass with each branch's
  share scaled by its keep probability; exact, no sampling noise) with the full gradient; its
  lowest and highest over the batches;
- kept branch: one step's kept-branch gradient against its full gradient (`--masks` random masks
  per rate), and the same by depth (first, middle, last third of the branches);
- the speed-up the FLOPs model predicts, the rate `auto` chooses (threshold 0.9 on every batch),
  and what the check costs against one training step.

    .venv/bin/python benchmarks/dropbp_fidelity.py                       # both tasks, bundled model
    .venv/bin/python benchmarks/dropbp_fidelity.py --model /path/to/hf-folder --tasks radiology
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dropbp_speed import LORA_TARGETS, TASKS  # noqa: E402


def measure(model_name: str, task: str, batches: int, masks: int):  # type: ignore[no-untyped-def]
    from verticals.finetune import FinetuneConfig, check_dropbp
    from verticals.llm import open_model, quiet_transformers

    quiet_transformers()
    model = open_model(model_name, dtype="float32")
    train, _ = TASKS[task][0]()
    config = FinetuneConfig(batch_size=4, lora_targets=LORA_TARGETS["all"], lora_dropout=0.0, seed=0)
    return check_dropbp(model, train, config, batches=batches, masks=masks)


def table(rows: list[tuple[str, object]]) -> str:
    lines = ["| task | drop rate | cos expected (mean) | lowest-highest over batches | kept branch | first third | "
             "middle third | last third | predicted speed-up |", "|---|---|---|---|---|---|---|---|---|"]
    for task, found in rows:
        for r in found.rates:  # type: ignore[attr-defined]
            thirds = " | ".join("-" if t is None else f"{t:.3f}" for t in r.thirds)
            kept = "-" if r.kept is None else f"{r.kept:.3f}"
            chosen = " (auto)" if r.rate == found.chosen else ""  # type: ignore[attr-defined]
            lines.append(f"| {task} | {r.rate}{chosen} | {r.cosine:.3f} | {r.cosine_low:.3f}-{r.cosine_high:.3f} | "
                         f"{kept} | {thirds} | {r.speedup:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="bundled", help="bundled or a Hugging Face model folder")
    parser.add_argument("--tasks", default="breast_cancer,radiology", help="comma-separated: " + ", ".join(TASKS))
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--masks", type=int, default=2)
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    if not set(tasks) <= set(TASKS):
        parser.error(f"--tasks takes {', '.join(TASKS)}, got {args.tasks!r}")
    rows = [(task, measure(args.model, task, args.batches, args.masks)) for task in tasks]
    print(table(rows))
    for task, found in rows:
        cost = found.seconds / found.step_seconds  # type: ignore[attr-defined]
        print(f"{task}: {found.verdict()}; the check: {found.passes} passes in {found.seconds:.0f} s = "  # type: ignore[attr-defined]
              f"{cost:.0f} times one batch's forward+backward ({found.step_seconds:.2f} s); auto alone (no "  # type: ignore[attr-defined]
              f"masks) runs {found.batches * (1 + len(found.rates))} passes")  # type: ignore[attr-defined]


if __name__ == "__main__":
    main()
