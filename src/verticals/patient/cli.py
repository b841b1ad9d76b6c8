"""`verticals patient`: the patient report assistant from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich",
                  help="Help a patient or caregiver understand a radiology report (chest CT or X-ray): findings, "
                       "plain-language terms, and safe answers to their questions.\n\n"
                       "[bold]Example:[/] verticals patient explain report.txt")

_LOOK = {"present": "bold red", "uncertain": "bold yellow", "absent": "green"}
_SAYS = {"present": "the report says this is there", "uncertain": "the report says this may be there",
         "absent": "the report says this is not there"}


@app.command(epilog="Example: verticals patient explain report.txt")
def explain(
    report: Annotated[Path, typer.Argument(help="the report: a .txt file or a PDF with text")],
) -> None:
    """Print the report with its findings marked and its terms defined in plain words."""
    from verticals.patient.findings import report_mentions
    from verticals.patient.glossary import glossary
    from verticals.patient.report import load_report

    read = load_report(report)
    terms = glossary()
    console = Console(highlight=False)
    defined: set[str] = set()
    section = None
    for sentence, mentions in report_mentions(read):
        if sentence.section != section:
            section = sentence.section
            console.print(Text(f"\n{section.upper()}", style="bold underline"))
        line = Text(sentence.text)
        for mention in mentions:
            line.stylize(_LOOK[mention.certainty], mention.start, mention.end)
        console.print(line)
        for mention in mentions:
            details = [d for d in (mention.side, ", ".join(mention.places), ", ".join(mention.sizes),
                                   ", ".join(mention.changes)) if d]
            console.print(Text.assemble(("   * ", ""), (mention.name, _LOOK[mention.certainty]),
                                        f": {_SAYS[mention.certainty]}",
                                        f" ({'; '.join(details)})" if details else "",
                                        (" URGENT" if mention.urgent else "", "bold red")))
        for _, _, term in terms.find(sentence.text):
            if term.term not in defined:
                defined.add(term.term)
                console.print(Text.assemble(("   ? ", ""), (term.term, "italic"), f": {term.definition}"))
    console.print(Text("\nThis explanation comes from an AI reading the report's words; it is not a diagnosis. "
                       "Ask your care team what the report means for you.", style="dim"))
