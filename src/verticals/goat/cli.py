"""`verticals goat`: the GOAT-Bench harness from the command line."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich",
                  help="GOAT-Bench: how well models recognise abuse in memes (hateful, misogynistic, offensive, "
                       "sarcastic, harmful), macro-F1 per task.\n\n"
                       "[bold]Example:[/] verticals goat fixture memes && verticals goat eval --data memes "
                       "--model ocr+bundled --out runs/goat")


@app.command(epilog="Example: verticals goat fixture memes --train 60 --test 40")
def fixture(
    out: Annotated[Path, typer.Argument(help="a new folder for the synthetic meme set")],
    train: Annotated[int, typer.Option(help="memes per task in the train split")] = 60,
    test: Annotated[int, typer.Option(help="memes per task in the test split")] = 40,
    seed: Annotated[int, typer.Option(help="everything drawn depends on it alone")] = 0,
) -> None:
    """Write a synthetic meme set in the release's shape (for tests and demos; never GOAT-Bench)."""
    from verticals.goat.fixture import write_fixture

    write_fixture(out, train=train, test=test, seed=seed)
    Console(stderr=True).print(f"wrote {5 * (train + test)} memes in 5 tasks to {out}", markup=False, highlight=False)


@app.command(epilog="Example: verticals goat eval --data memes --model ocr+bundled --out runs/ocr-bundled; "
                    "verticals goat eval --data GOAT --model openai:http://127.0.0.1:8000/v1#qwen-vl --out runs/qwen")
def eval(  # noqa: A001 - the command is called eval
    data: Annotated[Path, typer.Option(help="the meme set: one folder per task with images and a .json(l) file")],
    model: Annotated[str, typer.Option(help="openai:URL[#name], ocr+MODEL, text+MODEL (MODEL: bundled, a folder "
                                            "or a URL) or replay:FILE")],
    out: Annotated[Path, typer.Option(help="run folder; the same command there resumes the run")],
    tasks: Annotated[str, typer.Option(help="all, or a comma list such as misogyny,sarcasm")] = "all",
    prompt: Annotated[str, typer.Option(help="zero-shot (the official prompt), cot or k-shot")] = "zero-shot",
    split: Annotated[str, typer.Option(help="the split to evaluate")] = "test",
    limit: Annotated[int, typer.Option(help="only the first N memes of each task (0 = all)")] = 0,
    probabilities: Annotated[bool, typer.Option(help="also read P(Yes) from log-probabilities (AUROC)")] = False,
    strict: Annotated[bool, typer.Option(help="stop at the first unusable record instead of skipping it")] = False,
    seed: Annotated[int, typer.Option(help="seed of the k-shot examples and the bootstrap")] = 0,
    adapter: Annotated[Path | None, typer.Option(help="a LoRA adapter folder for a local text model")] = None,
    max_unknown: Annotated[float, typer.Option(help="stop when a task's share of answers that cannot be read as "
                                                    "Yes or No passes this (1 = never stop)")] = 0.5,
    judge: Annotated[str, typer.Option(help="a model (bundled, a folder or a URL) that rereads the answers the "
                                            "rules cannot read; its verdicts are marked in the samples")] = "",
    concurrency: Annotated[int, typer.Option(help="requests in flight to a server model")] = 8,
) -> None:
    """Evaluate a model; prints a table; results.json, samples_<task>.jsonl and report.md go to --out."""
    from verticals.goat.runner import EvalSettings, evaluate
    from verticals.llm import ResponseCache, quiet_transformers

    settings = EvalSettings(data, model, out, tasks=tasks, prompt=prompt, split=split, seed=seed, limit=limit,
                            probabilities=probabilities, strict=strict, adapter=adapter, max_unknown=max_unknown,
                            judge=judge, concurrency=concurrency)
    quiet_transformers()
    results = evaluate(settings, cache=ResponseCache.default())
    table = Table(title=f"{results['model']['spec']} on {results['benchmark']} ({prompt})")
    for column in ("task", "memes", "macro-F1", "95% interval", "accuracy", "unknown answers", "AUROC"):
        table.add_column(column, justify="right")
    for name, scores in results["tasks"].items():
        low, high = scores["macro_f1_ci95"]
        auroc = scores.get("auroc")
        table.add_row(name, str(scores["n"]), f"{scores['macro_f1']:.3f}", f"{low:.3f}-{high:.3f}",
                      f"{scores['accuracy']:.3f}", str(round(scores["unknown_rate"] * scores["n"])),
                      "-" if auroc is None else f"{auroc:.3f}")
    overall = results["overall"]
    table.add_row("mean", str(overall["memes"]), f"{overall['macro_f1']:.3f}", "", f"{overall['accuracy']:.3f}",
                  str(overall["unknown"]), "", style="bold")
    _wide().print(table)
    for name, why in results["tasks_left_out"].items():
        Console(stderr=True).print(f"{name} left out: {why}", markup=False, highlight=False)
    Console(stderr=True).print(f"results in {out}/results.json, report in {out}/report.html", markup=False,
                               highlight=False)


@app.command(epilog="Example: verticals goat align --data memes --out runs/align-adapter; then verticals goat eval "
                    "--data memes --model ocr+bundled --adapter runs/align-adapter --out runs/align")
def align(
    data: Annotated[Path, typer.Option(help="the meme set; its train split is learnt")],
    out: Annotated[Path, typer.Option(help="a new folder for the LoRA adapter (and its checkpoints)")],
    tasks: Annotated[str, typer.Option(help="all, or a comma list such as misogyny,sarcasm")] = "all",
    base: Annotated[str, typer.Option(help="the text model to tune: bundled or a model folder")] = "bundled",
    steps: Annotated[int, typer.Option(help="optimizer steps")] = 100,
    batch_size: Annotated[int, typer.Option(help="memes per step")] = 8,
    lr: Annotated[float, typer.Option(help="peak learning rate")] = 1e-3,
    max_length: Annotated[int, typer.Option(help="longest prompt and answer, in tokens (longer memes are left "
                                                 "out and counted)")] = 512,
    drop_rate: Annotated[float, typer.Option(help="DropBP drop rate (0 = off)")] = 0.0,
    seed: Annotated[int, typer.Option(help="seed of data order and LoRA init")] = 0,
    resume: Annotated[bool, typer.Option(help="continue the run in --out after its last checkpoint")] = False,
) -> None:
    """Learn each task's train split (OCR text + Yes/No, LoRA): the paper's supervised baseline, local."""
    from verticals.goat.align import AlignSettings
    from verticals.goat.align import align as train
    from verticals.llm import ResponseCache, quiet_transformers

    settings = AlignSettings(data, out, tasks=tasks, base=base, steps=steps, batch_size=batch_size, lr=lr,
                             max_length=max_length, drop_rate=drop_rate, seed=seed)
    quiet_transformers()
    record = train(settings, cache=ResponseCache.default(), resume=resume)
    loss = "unknown" if record["final_loss"] is None else f"{record['final_loss']:.4f}"
    print(f"done: {record['steps']} steps on {record['examples']} memes, final loss {loss}\n"
          f"evaluate it: verticals goat eval --data {data} --model ocr+{base} --adapter {out} --out runs/align",
          file=sys.stderr)


@app.command(epilog="Example: verticals goat compare runs/ocr-bundled runs/qwen")
def compare(
    first: Annotated[Path, typer.Argument(help="a run folder (the baseline)")],
    second: Annotated[Path, typer.Argument(help="another run folder on the same memes")],
    seed: Annotated[int, typer.Option(help="seed of the bootstrap")] = 0,
) -> None:
    """Is the second run better than the first? Paired bootstrap of macro-F1 on the memes both scored."""
    from verticals.goat.compare import compare_runs

    result = compare_runs(first, second, seed=seed)
    title = f"{result['second']['model']} ({result['second']['prompt']}) minus {result['first']['model']} " \
            f"({result['first']['prompt']})" + (" on the fixture" if result["fixture"] else "")
    table = Table(title=title)
    for column in ("task", "memes", "macro-F1 difference", "95% interval", "p-value"):
        table.add_column(column, justify="right")
    for task, row in result["tasks"].items():
        low, high = row["ci95"]
        table.add_row(task, str(row["n"]), f"{row['delta_macro_f1']:+.3f}", f"{low:+.3f} to {high:+.3f}",
                      f"{row['p_value']:.3f}")
    _wide().print(table)


@app.command(epilog="Example: verticals goat leaderboard runs/ > leaderboard.md")
def leaderboard(
    root: Annotated[Path, typer.Argument(help="a folder holding run folders")],
) -> None:
    """Print a Markdown table of every run under a folder, best mean macro-F1 first."""
    from verticals.goat.compare import leaderboard as board

    print(board(root), end="")


def _wide() -> Console:
    """A console that does not squeeze tables to 80 columns when the output goes to a file or a pipe."""
    return Console() if sys.stdout.isatty() else Console(width=130)
