"""`verticals serval`: label-free medical prediction (SERSAL) from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich",
                  help="Label-free medical prediction: an LLM's zero-shot guesses teach a small tabular model, "
                       "which then tunes the LLM (SERSAL).\n\n"
                       "[bold]Example:[/] verticals serval run heart_disease --llm bundled --out runs/heart")


@app.command(epilog="Example: verticals serval datasets")
def datasets() -> None:
    """List the registered datasets (they ship inside installed packages: no download)."""
    from verticals.serval.datasets import list_datasets, load_dataset

    table = Table("name", "rows", "positive", "features", "question", title="registered datasets")
    for name in list_datasets():
        data = load_dataset(name)
        positives = int(data.labels.sum()) if data.labels is not None else 0
        table.add_row(name, str(len(data)), f"{positives} ({positives / len(data):.0%})",
                      str(len(data.meta.features)), data.meta.question)
    Console().print(table)


@app.command(epilog="Example: verticals serval run heart_disease --llm bundled --out runs/heart; "
                    "verticals serval run my.csv --metadata my.toml --llm http://localhost:8000/v1 --out runs/mine; "
                    "verticals serval run pima_diabetes --llm simulated:auc=0.75 --out runs/study")
def run(
    dataset: Annotated[str, typer.Argument(help="a registered name (see `datasets`) or a CSV file")],
    out: Annotated[Path, typer.Option(help="run folder; the same command there resumes the run")],
    llm: Annotated[str, typer.Option(help="bundled, a model folder, an OpenAI-compatible URL, or "
                                          "simulated:auc=0.75 (a study tool)")] = "bundled",
    metadata: Annotated[Path | None, typer.Option(help="metadata TOML for a CSV (default: beside it)")] = None,
    loops: Annotated[int, typer.Option(help="annotate -> teach -> check -> reverse-tune rounds")] = 1,
    annotation: Annotated[str, typer.Option(help="logprobs, verbalized or vote")] = "logprobs",
    style: Annotated[str, typer.Option(help="described (names, units, meanings) or plain")] = "described",
    targets: Annotated[str, typer.Option(help="rank (the LLM's ranking) or raw (its probabilities)")] = "rank",
    small_model: Annotated[str, typer.Option(help="ft_transformer or boosted_trees")] = "ft_transformer",
    noisy: Annotated[str, typer.Option(help="dividemix or none")] = "dividemix",
    max_rows: Annotated[int, typer.Option(help="use a random subset of this many rows (0 = all)")] = 0,
    confident_share: Annotated[float, typer.Option(help="share of training rows at each end of the small model's "
                                                        "ranking that teach the LLM")] = 0.25,
    tune_steps: Annotated[int, typer.Option(help="LoRA steps of reverse tuning")] = 60,
    drop_rate: Annotated[str, typer.Option(help="DropBP rate while reverse-tuning: a number (0 = off), or auto = "
                                                "the highest rate whose gradient stays faithful")] = "auto",
    max_unreadable: Annotated[float, typer.Option(help="stop when more than this share of rows get no readable "
                                                       "answer from the LLM (each is counted, given 0.5)")] = 0.1,
    prompts: Annotated[Path | None, typer.Option(help="a prompt template TOML (default: the packaged one)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the split, the small model and the tuning")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    force: Annotated[bool, typer.Option(help="go on when the teacher check finds the LLM says little about the "
                                             "table (the report says so on its first line)")] = False,
) -> None:
    """Run (or resume) SERSAL and print the table; results.json, samples.jsonl and report.html go to --out."""
    from verticals.serval.config import ServalConfig, ServalError

    if drop_rate.strip().lower() != "auto":
        try:
            float(drop_rate)
        except ValueError:
            raise ServalError(f"--drop-rate should be a number (0: DropBP off) or auto, got {drop_rate!r}") from None
    config = ServalConfig(loops=loops, annotation=annotation, style=style, targets=targets, small_model=small_model,
                          noisy=noisy, max_rows=max_rows, confident_share=confident_share, tune_steps=tune_steps,
                          drop_rate="auto" if drop_rate.strip().lower() == "auto" else float(drop_rate),
                          max_unreadable=max_unreadable, seed=seed)
    from verticals.llm import quiet_transformers
    from verticals.serval.pipeline import sersal
    from verticals.serval.report import table_rows, verdict

    quiet_transformers()
    console = Console(stderr=True)
    results = sersal(dataset, llm, out, config, metadata=metadata, prompts=prompts, device=device, force=force,
                     say=lambda message: console.print(Text(message, style="dim"), highlight=False, soft_wrap=True))
    table = Table("model", "AUC (95% interval)", "accuracy (95% interval)",
                  title=f"SERSAL on {results['dataset']} ({results['split']['test']} test rows)")
    for row in table_rows(results):
        table.add_row(*row)
    Console().print(table)
    Console().print(Text(verdict(results)[:1].upper() + verdict(results)[1:]), soft_wrap=True)
    recovery = results["oracle_recovery"]
    Console().print(f"oracle recovery {recovery:.3f}" if recovery is not None else "no gold labels: no scores",
                    f"\nreport: {out / 'report.html'}", highlight=False)
