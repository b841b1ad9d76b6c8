"""`verticals llm`: chat with, score with, and serve a language model."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from verticals.llm.base import LanguageModel

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich",
                  help="Chat with a model, read answer probabilities, or serve a model over the OpenAI API.\n\n"
                       "[bold]Example:[/] verticals llm chat \"What does an ejection fraction of 35% mean?\"")

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="bundled, a model folder, or http(s)://host/v1[#name]")]
AdapterOpt = Annotated[Path | None, typer.Option(help="LoRA adapter folder for a local model")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N")]
DtypeOpt = Annotated[str, typer.Option(help="auto, float32, bfloat16 or float16")]
CacheOpt = Annotated[bool, typer.Option("--cache/--no-cache", help="reuse answers of earlier identical requests")]


def _open(model: str, adapter: Path | None, device: str, dtype: str, cache: bool) -> LanguageModel:
    from verticals.llm.cache import ResponseCache
    from verticals.llm.loader import open_model

    quiet_transformers()
    return open_model(model, adapter=adapter, device=device, dtype=dtype,
                      cache=ResponseCache.default() if cache else None)


def quiet_transformers() -> None:
    """Keep transformers' own progress bars and warnings out of our terminal output."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # deprecation notices raised inside transformers by the libraries that call it (peft) are not the user's to fix
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


@app.command(epilog="Example: verticals llm chat --system \"Answer in one sentence.\" \"What is a stent?\"")
def chat(
    prompt: Annotated[str, typer.Argument(help="the user's message")],
    model: ModelOpt = "bundled",
    system: Annotated[str | None, typer.Option(help="a system message")] = None,
    max_tokens: Annotated[int, typer.Option(help="longest reply, in tokens")] = 256,
    temperature: Annotated[float, typer.Option(help="0 is greedy")] = 0.0,
    adapter: AdapterOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    cache: CacheOpt = False,
) -> None:
    """Stream the model's reply to one message."""
    lm = _open(model, adapter, device, dtype, cache)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    for piece in lm.stream(messages, max_tokens=max_tokens, temperature=temperature):
        print(piece, end="", flush=True)
    print()


@app.command(epilog="Example: verticals llm probs --choices Yes,No \"Is a resting heart rate of 140 normal?\" "
                    "\"Is aspirin an antiplatelet drug?\"")
def probs(
    prompts: Annotated[list[str] | None, typer.Argument(help="questions, one per argument")] = None,
    choices: Annotated[str, typer.Option(help="comma-separated answer options")] = "Yes,No",
    file: Annotated[Path | None, typer.Option(help="a text file with one question per line")] = None,
    model: ModelOpt = "bundled",
    adapter: AdapterOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    cache: CacheOpt = True,
) -> None:
    """Print the probability of each answer option, read from token log-probabilities."""
    from verticals.llm.base import check_choices
    from verticals.llm.errors import LLMError

    questions = list(prompts or [])
    if file is not None:
        if not file.is_file():
            raise LLMError(f"question file not found: {file}")
        questions += [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    options = list(check_choices([c.strip() for c in choices.split(",")]))
    if not questions:
        raise LLMError("no questions given; pass them as arguments or with --file")
    lm = _open(model, adapter, device, dtype, cache)
    table_rows = lm.choice_probs(questions, options, progress=len(questions) > 64)
    table = Table(title=f"P(answer) from {model}")
    table.add_column("question", overflow="fold")
    for option in options:
        table.add_column(option, justify="right")
    for question, row in zip(questions, table_rows):
        table.add_row(question, *(f"{p:.3f}" for p in row))
    Console().print(table)


@app.command(epilog="Example: verticals llm serve --model runs/tuned --port 8000, then point any OpenAI client "
                    "at http://127.0.0.1:8000/v1")
def serve(
    model: ModelOpt = "bundled",
    adapter: AdapterOpt = None,
    name: Annotated[str | None, typer.Option(help="model name clients use; defaults to the adapter's or the "
                                                  "model's folder name")] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    max_queue: Annotated[int, typer.Option(help="requests that may wait while one generates; more get a 429")] = 32,
    timeout: Annotated[float, typer.Option(help="seconds a request may take, queue included; then a 503")] = 600.0,
    max_body_mb: Annotated[float, typer.Option(help="largest request body in MB; larger gets a 413")] = 8.0,
    shutdown_grace: Annotated[float, typer.Option(help="seconds the running request gets to finish on "
                                                       "SIGTERM or Ctrl-C")] = 5.0,
    ocr: Annotated[bool, typer.Option(help="read the text in image parts with the bundled OCR and give it to the "
                                           "model in their place (--no-ocr refuses images)")] = True,
) -> None:
    """Serve a local model (bundled, a folder, or base + LoRA adapter) as an OpenAI-compatible API."""
    from verticals.llm.errors import LLMError
    from verticals.llm.local import LocalModel
    from verticals.llm.serve import ServeLimits, Server, create_app

    if model.startswith(("http://", "https://")):
        raise LLMError("serve runs a local model: give 'bundled' or a model folder")
    if not 0 <= port <= 65535:
        raise LLMError(f"port must be between 0 and 65535, got {port}")
    limits = ServeLimits(max_queue=max_queue, timeout=timeout, max_body_bytes=int(max_body_mb * 1024 * 1024),
                         shutdown_grace=shutdown_grace)  # checked before the model loads
    if ocr:
        from verticals.encoders import ocr_engine

        ocr_engine()  # the OCR is installed, or one line now
    quiet_transformers()
    lm = LocalModel.bundled(adapter=adapter, device=device, dtype=dtype) if model == "bundled" else LocalModel(
        model, adapter=adapter, device=device, dtype=dtype)
    base_name = "smollm2-135m-instruct" if model == "bundled" else Path(model).resolve().name
    served_name = name or (adapter.resolve().name if adapter is not None else base_name)
    names = served_name + (f" (adapter) and {base_name} (base)" if adapter is not None and base_name != served_name
                           else "")
    Console(stderr=True).print(f"serving {names} on http://{host}:{port}/v1", markup=False, highlight=False)
    app = create_app(lambda: lm, served_name, base_name=base_name, limits=limits, read_images=ocr)
    Server(app, host=host, port=port, limits=limits).run()
