"""`verticals finetune`: supervised fine-tuning with DropBP, from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

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
    drop_rate: Annotated[float, typer.Option(help="DropBP target drop rate (0 = off)")] = 0.0,
    drop_allocation: Annotated[str, typer.Option(help="uniform or sensitivity")] = "uniform",
    drop_schedule: Annotated[str, typer.Option(help="constant or linear")] = "constant",
    drop_warmup_steps: Annotated[int, typer.Option(help="steps of the linear drop-rate warm-up")] = 0,
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
                            max_length=max_length, drop_rate=drop_rate, drop_allocation=drop_allocation,
                            drop_schedule=drop_schedule, drop_warmup_steps=drop_warmup_steps,
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
        f"chat with it:  verticals llm chat -m {base}{adapter} \"...\"\n"
        f"serve it:      verticals llm serve -m {base}{adapter}", markup=False, highlight=False)
