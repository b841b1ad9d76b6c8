"""`verticals finetune`: supervised fine-tuning with DropBP, from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from verticals.dropbp import MIN_COSINE

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich",
                  help="Fine-tune a local model (LoRA or full) on chat or text examples, with DropBP.\n\n"
                       "[bold]Example:[/] verticals finetune run chats.jsonl --out runs/tuned --drop-rate 0.5")


@app.command(epilog="Example: verticals finetune run chats.jsonl --out runs/tuned --steps 300 --drop-rate 0.5 "
                    "--drop-allocation sensitivity; then verticals llm serve --adapter runs/tuned")
def run(
    data: Annotated[Path, typer.Argument(help="JSONL: {'messages': [...]} chat examples or {'text': ...} lines")],
    out: Annotated[Path, typer.Option(help="output folder (adapter or model, checkpoints, train_log.jsonl)")],
    model: Annotated[str, typer.Option("--model", "-m", help="bundled or a local model folder")] = "bundled",
    method: Annotated[str, typer.Option(help="lora or full")] = "lora",
    steps: Annotated[int, typer.Option(help="optimizer steps")] = 100,
    batch_size: Annotated[int, typer.Option(help="examples per micro-batch")] = 4,
    grad_accum: Annotated[int, typer.Option(help="micro-batches per optimizer step")] = 1,
    lr: Annotated[float, typer.Option(help="peak learning rate")] = 2e-4,
    max_length: Annotated[int, typer.Option(help="longest example, in tokens")] = 512,
    drop_rate: Annotated[str, typer.Option(help="DropBP target drop rate: 0 = off, or auto = the highest rate "
                                                "whose gradient stays faithful (checked first)")] = "auto",
    drop_allocation: Annotated[str, typer.Option(help="uniform or sensitivity")] = "uniform",
    drop_schedule: Annotated[str, typer.Option(help="constant or linear")] = "constant",
    drop_warmup_steps: Annotated[int, typer.Option(help="steps of the linear drop-rate warm-up")] = 0,
    drop_min_cosine: Annotated[float, typer.Option(help="auto: the cosine of the expected DropBP gradient with "
                                                        "the full one it requires on every batch")] = MIN_COSINE,
    save_every: Annotated[int, typer.Option(help="checkpoint every N steps")] = 50,
    seed: Annotated[int, typer.Option(help="seed of data order, LoRA init and DropBP masks")] = 0,
    resume: Annotated[bool, typer.Option(help="continue the run in --out after its last checkpoint")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
) -> None:
    """Fine-tune and write a model that `verticals llm chat/serve` can load."""
    from verticals.finetune.config import FinetuneConfig
    from verticals.finetune.data import read_jsonl
    from verticals.finetune.train import finetune
    from verticals.llm import open_model, quiet_transformers

    config = FinetuneConfig(method=method, steps=steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr,
                            max_length=max_length, drop_rate=parse_drop_rate(drop_rate),
                            drop_allocation=drop_allocation,
                            drop_schedule=drop_schedule, drop_warmup_steps=drop_warmup_steps,
                            drop_min_cosine=drop_min_cosine,
                            save_every=save_every, seed=seed)
    records = read_jsonl(data)  # bad data fails before the model loads
    if out.exists() and not out.is_dir():
        from verticals.finetune.config import FinetuneError

        raise FinetuneError(f"--out {out} is a file; give a folder for the run")
    if model.startswith(("http://", "https://")):
        from verticals.finetune.config import FinetuneError

        raise FinetuneError("fine-tuning needs local weights: give 'bundled' or a model folder")
    quiet_transformers()
    local = open_model(model, device=device, dtype="float32")
    result = finetune(local, records, out, config, resume=resume)
    from accelerate import PartialState  # set up by finetune(); under torchrun, one world of all ranks

    state = PartialState()
    if state.num_processes > 1:  # every rank done before the world ends; else gloo aborts a rank at exit
        state.wait_for_everyone()
        state.destroy_process_group()
    if not state.is_main_process:
        return
    world = f" on {state.num_processes} processes" if state.num_processes > 1 else ""
    adapter = f" --adapter {out}" if method == "lora" else ""
    base = model if method == "lora" else str(out)
    left_out = (f"left out: {result.left_out} conversations whose last reply did not fit in --max-length "
                f"{max_length} tokens\n") if result.left_out else ""
    Console(stderr=True).print(
        f"done: {result.steps} steps{world} in {result.seconds:.0f} s, final loss {result.final_loss:.4f}\n"
        f"{left_out}"
        f"{result.dropbp + chr(10) if result.dropbp else ''}"
        f"chat with it:  verticals llm chat -m {base}{adapter} \"...\"\n"
        f"serve it:      verticals llm serve -m {base}{adapter}", markup=False, highlight=False)


def parse_drop_rate(text: str) -> float | str:
    """`--drop-rate`: a number, or `auto`."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        from verticals.finetune.config import FinetuneError

        raise FinetuneError(f"--drop-rate should be a number (0 turns DropBP off) or auto, got {text!r}") from None


@app.command("check-dropbp", epilog="Example: verticals finetune check-dropbp chats.jsonl --model bundled")
def check_dropbp(
    data: Annotated[Path, typer.Argument(help="JSONL examples, as for `verticals finetune run`")],
    model: Annotated[str, typer.Option("--model", "-m", help="bundled or a local model folder")] = "bundled",
    method: Annotated[str, typer.Option(help="lora or full, as the run would train")] = "lora",
    adapter_targets: Annotated[str, typer.Option(help="LoRA target modules, comma-separated")] =
        "q_proj,k_proj,v_proj,o_proj",
    batch_size: Annotated[int, typer.Option(help="examples per batch")] = 4,
    max_length: Annotated[int, typer.Option(help="longest example, in tokens")] = 512,
    batches: Annotated[int, typer.Option(help="batches to measure on (the spread over them is shown); a run's "
                                             "auto measures on 2")] = 2,
    masks: Annotated[int, typer.Option(help="random masks per rate for the kept-branch figure (0 skips it)")] = 2,
    rates: Annotated[str, typer.Option(help="drop rates to measure, comma-separated")] =
        "0.125,0.25,0.375,0.5,0.625,0.75",
    min_cosine: Annotated[float, typer.Option(help="the cosine auto requires on every batch")] = MIN_COSINE,
    seed: Annotated[int, typer.Option(help="seed of batch order, LoRA init and masks")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
) -> None:
    """How faithful DropBP's gradient is on your model and data, at each drop rate, and the rate auto would choose.

    Cost: BATCHES x (1 + rates x (1 + MASKS)) forward and backward passes (printed at the end).
    """
    from verticals.finetune.check import check_dropbp as check
    from verticals.finetune.config import FinetuneConfig, FinetuneError
    from verticals.finetune.data import read_jsonl
    from verticals.llm import open_model, quiet_transformers

    try:
        grid = tuple(float(r) for r in rates.split(","))
    except ValueError:
        raise FinetuneError(f"--rates should be numbers separated by commas, got {rates!r}") from None
    if not grid or any(not 0 <= r < 1 for r in grid):
        raise FinetuneError(f"--rates should be drop rates in [0, 1), got {rates!r}")
    targets = tuple(t.strip() for t in adapter_targets.split(",") if t.strip())
    if not targets:
        raise FinetuneError("--adapter-targets names no module")
    if masks < 0 or batches < 1:
        raise FinetuneError(f"--batches should be at least 1 and --masks at least 0, got {batches} and {masks}")
    if not -1 <= min_cosine <= 1:
        raise FinetuneError(f"--min-cosine should be in [-1, 1], got {min_cosine}")
    config = FinetuneConfig(method=method, batch_size=batch_size, max_length=max_length, lora_targets=targets,
                            seed=seed)  # as `finetune run` would train: what its auto would see
    records = read_jsonl(data)  # bad data fails before the model loads
    if model.startswith(("http://", "https://")):
        raise FinetuneError("the check needs local weights: give 'bundled' or a model folder")
    quiet_transformers()
    local = open_model(model, device=device, dtype="float32", lazy=True)  # the check loads its own copy
    found = check(local, records, config, batches=batches, masks=masks, rates=grid, min_cosine=min_cosine)
    print(found.table())  # plain: a table people copy into notes, never wrapped or styled
