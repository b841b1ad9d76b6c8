"""`verticals`: the command line. One Typer root; one sub-app per system, mounted as it lands."""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from rich.text import Text

from verticals import __version__
from verticals.dropbp import DropBPError
from verticals.encoders import EncoderError
from verticals.finetune import FinetuneError
from verticals.finetune.cli import app as finetune_app
from verticals.goat import GoatError
from verticals.goat.cli import app as goat_app
from verticals.llm import LLMError
from verticals.llm.cli import app as llm_app
from verticals.patient import PatientError
from verticals.patient.cli import app as patient_app
from verticals.serval import ServalError
from verticals.serval.cli import app as serval_app

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_enable=False,
                  help="Four published AI systems, offline on a CPU.\n\n"
                       "[bold]Example:[/] verticals llm probs --choices Yes,No \"Is a troponin of 2 ng/ml raised?\"")
app.add_typer(llm_app, name="llm")
app.add_typer(finetune_app, name="finetune")
app.add_typer(serval_app, name="serval")
app.add_typer(goat_app, name="goat")
app.add_typer(patient_app, name="patient")

#: errors that are the user's to fix: one line, exit code 2, never a traceback.
USER_ERRORS: tuple[type[Exception], ...] = (LLMError, FinetuneError, DropBPError, ServalError, GoatError,
                                            EncoderError, PatientError)


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="print the version and exit")) -> None:
    if version:
        print(__version__)
        raise typer.Exit()


def main() -> None:
    """Entry point: run the app, turning user errors into one line and exit code 2."""
    try:
        app()
    except USER_ERRORS as err:
        # the message as plain text: Rich would take "[0]" or "[bold]" in it for markup
        Console(stderr=True).print(Text.assemble(("error: ", "bold red"), str(err)), highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C: stop quietly; streams close and servers stop generating
        print(file=sys.stderr)
        sys.exit(130)
