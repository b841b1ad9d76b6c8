"""`verticals patient`: the patient report assistant from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.text import Text

if TYPE_CHECKING:
    from verticals.llm import LanguageModel

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


@app.command(epilog="Example: verticals patient diagram report.txt --out chest.svg")
def diagram(
    report: Annotated[Path, typer.Argument(help="the report: a .txt file or a PDF with text")],
    out: Annotated[Path | None, typer.Option(help="write the chest diagram (SVG) here, its parts lit")] = None,
) -> None:
    """Where the report's findings are: the lobes, pleura, heart and mediastinum they name, on a chest diagram."""
    from verticals.patient.anatomy import anatomy
    from verticals.patient.anatomy import diagram as place
    from verticals.patient.report import load_report

    if out is not None and out.is_dir():
        from verticals.patient.config import PatientError

        raise PatientError(f"--out {out} is a folder; give a file name ending in .svg")
    found = place(load_report(report))
    names = anatomy().parts
    console = Console(highlight=False)
    if not found.spots:
        console.print(Text("The report places no finding it says is there (or may be there) in the chest."))
    for part, certainty in found.parts.items():
        here = sorted({s.finding for s in found.spots if s.part == part})
        console.print(Text.assemble((names[part], _LOOK[certainty]), f": {', '.join(here)}",
                                    " (the report says this may be there)" if certainty == "uncertain" else ""))
    for missing in found.unplaced:
        where = "not in the chest drawing" if missing.why == "elsewhere" else "the report does not say where"
        console.print(Text(f"{missing.finding}: {where}", style="dim"))
    if out is not None:
        from verticals.files import write_text

        write_text(out, found.svg())
        console.print(Text(f"diagram: {out}"))


@app.command(epilog="Example: verticals patient image cd/DICOM --report report.txt --window lung --out slice.png")
def image(
    path: Annotated[Path, typer.Argument(help="a PNG or JPEG, a DICOM file, or a folder of DICOM files (one CD)")],
    out: Annotated[Path, typer.Option(help="the PNG to write")],
    window: Annotated[str, typer.Option(help="for CT: lung, mediastinum or bone")] = "mediastinum",
    series: Annotated[int | None, typer.Option(help="the series a report cites")] = None,
    number: Annotated[int | None, typer.Option("--image", help="the image number a report cites")] = None,
    report: Annotated[Path | None, typer.Option(help="a report: show the first image it cites")] = None,
) -> None:
    """Show one slice: the one a report cites ("series 3, image 45"), or the middle one. Names and IDs in
    the DICOM tags are never read."""
    from verticals.files import write_bytes
    from verticals.patient.config import PatientError
    from verticals.patient.image_refs import image_refs
    from verticals.patient.imaging import WINDOWS, read_images
    from verticals.patient.report import load_report

    if window not in WINDOWS:
        raise PatientError(f"--window should be one of {', '.join(WINDOWS)}, got {window!r}")
    if out.is_dir():
        raise PatientError(f"--out {out} is a folder; give a file name ending in .png")
    if report is not None and number is None:
        cited = image_refs(load_report(report).text)
        refs = [r for r in cited if r.series is not None] or cited  # "series 3, image 45" before a bare image
        if not refs:
            raise PatientError(f"{report.name} cites no image (such as \"series 3, image 45\")")
        series, number = refs[0].series, refs[0].image
    study = read_images(path)
    if number is None:
        index = len(study.slices) // 2
    else:
        found = study.index_of(series, number)
        if found is None:
            have = ", ".join(str(s) for s in study.series) or "none"
            raise PatientError(f"no image {number}{f' in series {series}' if series is not None else ''} here "
                               f"(series: {have}; images {_span(study)})")
        index = found
    write_bytes(out, study.png(index, window if study.hounsfield else None))
    shown = study.slices[index]
    if study.skipped:
        Console(stderr=True, highlight=False).print(Text(f"{study.skipped} DICOM files held no slice and were skipped"))
    label = f"series {shown.series}, image {shown.image}" if shown.image is not None else "the picture"
    Console(highlight=False).print(Text(f"{label} ({index + 1} of {len(study.slices)}"
                                        f"{', ' + window + ' window' if study.hounsfield else ''}): {out}"))


def _span(study: object) -> str:
    numbers = [s.image for s in study.slices if s.image is not None]  # type: ignore[attr-defined]
    return f"{min(numbers)}-{max(numbers)}" if numbers else "unnumbered"


@app.command(epilog="Example: verticals patient ask report.txt \"What does ground-glass mean?\" --model none")
def ask(
    report: Annotated[Path, typer.Argument(help="the report: a .txt file or a PDF with text")],
    question: Annotated[str, typer.Argument(help="the question, in your own words")],
    model: Annotated[str, typer.Option(help="the model that drafts answers: bundled, a model folder, an "
                                            "OpenAI-compatible URL, or none (templates only)")] = "bundled",
    as_json: Annotated[bool, typer.Option("--json", help="print the whole answer as JSON")] = False,
    second_opinion: Annotated[bool, typer.Option(help="when the theme is unsure, let the model choose between the "
                                                      "two likeliest")] = False,
) -> None:
    """Answer a question about the report: grounded in its sentences, with the notices it needs."""
    import json
    import sys

    from verticals.llm import quiet_transformers
    from verticals.patient.answer import Answer, answer_stream, check_question
    from verticals.patient.compose import Notice
    from verticals.patient.report import load_report

    question = check_question(question)  # before anything loads
    read = load_report(report)
    quiet_transformers()
    lm = None
    if model != "none":
        from verticals.llm import open_model

        # no response cache: it would keep answers drafted from this person's report on disk
        lm = open_model(model.removeprefix("openai:"), cache=None, lazy=True)
    console = Console(highlight=False)
    final = None
    for item in answer_stream(read, question, model=lm, second_opinion=second_opinion):
        if isinstance(item, Notice):
            if not as_json:
                console.print(Text(item.text, style="bold red"))
        elif isinstance(item, Answer):
            final = item
        elif not as_json:
            print(item, end="", flush=True)
    assert final is not None
    if as_json:
        print(json.dumps(final.to_dict(), ensure_ascii=False, indent=2))
        return
    print()
    console.print(Text(f"\ntheme: {final.theme_name} ({final.theme_probability:.0%}); answer from the "
                       f"{'model' if final.source == 'model' else 'template'}", style="dim"))
    for citation in final.citations:
        console.print(Text.assemble(("  cited: ", "dim"), f"[{citation.sentence.index}] {citation.sentence.text}"))
    if final.checks:
        console.print(Text("  the model's draft was not shown: " + ", ".join(sorted({f.check for f in final.checks})),
                           style="dim"))
    for notice in final.notices:
        if not notice.kind.startswith("urgent"):
            console.print(Text(notice.text, style="italic"))
    sys.stdout.flush()


@app.command(name="eval", epilog="Example: verticals patient eval --out runs/patient --model none")
def eval_(
    out: Annotated[Path, typer.Option(help="a new folder for results.json, samples.jsonl and report.html")],
    model: Annotated[str, typer.Option(help="the model that drafts answers: bundled, a model folder, an "
                                            "OpenAI-compatible URL, or none (templates only)")] = "bundled",
    limit: Annotated[int, typer.Option(help="ask only this many of the 240 test questions, spread over the "
                                            "themes (0 = all)")] = 0,
    seed: Annotated[int, typer.Option(help="seed of the sample of radlabels reports")] = 0,
    judge: Annotated[str, typer.Option(help="a model (bundled, a folder or a URL) that rates each answer 1-5 on "
                                            "the four Gricean maxims")] = "",
) -> None:
    """Evaluate the assistant on the held-out questions and the bundled reports (offline proxies of
    the paper's rubric: theme accuracy, grounding, hallucinated findings, referrals, reading grade)."""
    from verticals.llm import quiet_transformers
    from verticals.patient.evaluate import EvalSettings, evaluate

    settings = EvalSettings(out, model=model, limit=limit, seed=seed, judge=judge)  # checked before anything loads
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        from verticals.patient.config import PatientError

        raise PatientError(f"{out} exists and is not empty; give a new --out")
    quiet_transformers()
    lm = None
    if model != "none":
        from verticals.llm import ResponseCache, open_model

        lm = open_model(model.removeprefix("openai:"), cache=ResponseCache.default(), lazy=True)
    rater = None
    if judge:
        from verticals.llm import ResponseCache, open_model

        rater = open_model(judge.removeprefix("openai:"), cache=ResponseCache.default(), lazy=True)
    results = evaluate(settings, model=lm, judge=rater)
    console = Console(highlight=False)
    for key, label in (("theme_accuracy", "theme accuracy (target 0.85)"), ("grounding", "grounding (proxy)"),
                       ("hallucinated_findings", "answers with a hallucinated finding (target 0)"),
                       ("referral_compliance", "referral compliance (target 1)"),
                       ("urgent_first", "urgent notice first (target 1)"),
                       ("median_grade", "median reading grade (target 8 or lower)"),
                       ("median_words", "median words"), ("answers_from_model", "answers from the model")):
        value = results[key]
        console.print(Text(f"{label}: {'-' if value is None else round(value, 3)}"))
    for maxim, rating in (results.get("gricean") or {}).items():
        mean = "-" if rating["mean"] is None else f"{rating['mean']:.2f}"
        console.print(Text(f"{maxim} (judge, 1-5): {mean} over {rating['rated']} answers, "
                           f"{rating['unreadable']} replies without a rating"))
    console.print(Text(f"results in {out}/results.json, report in {out}/report.html", style="dim"))


@app.command(epilog="Example: verticals patient serve --model bundled --port 8000")
def serve(
    model: Annotated[str, typer.Option(help="the model that drafts answers: bundled, a model folder, an "
                                            "OpenAI-compatible URL, or none (templates only)")] = "bundled",
    host: Annotated[str, typer.Option(help="address to listen on (127.0.0.1: this computer only)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    model_wait: Annotated[float, typer.Option(help="seconds an answer waits for a busy model before it is given "
                                                   "from the report's words and the glossary instead")] = 10.0,
    model_slots: Annotated[int, typer.Option(help="drafts generated at once (default: 1 for a local model, 4 for "
                                                  "a server)")] = 0,
    sees_images: Annotated[bool, typer.Option(help="the --model server accepts images (a multimodal model): "
                                                   "questions about where a finding is, or about the picture on "
                                                   "screen, send that picture with the report")] = False,
) -> None:
    """Open the assistant as a web page: paste or upload a report, see it explained, ask questions.

    Nothing a person types is stored or logged; the log has request ids, themes and timings only."""
    import logging
    import socket

    from verticals.llm import quiet_transformers
    from verticals.patient.config import PatientError
    from verticals.patient.web import WebSettings, create_app

    remote = model.removeprefix("openai:").startswith(("http://", "https://"))
    if sees_images and not remote:
        raise PatientError("--sees-images needs a model that accepts images: give the URL of a multimodal "
                           "OpenAI-compatible server as --model (the bundled model reads text only)")
    settings = WebSettings(model_wait=model_wait, model_slots=model_slots or (4 if remote else 1),
                           sees_images=sees_images)
    if not 0 <= port <= 65535:
        raise PatientError(f"port must be between 0 and 65535, got {port}")
    try:  # before the model loads: a taken port is one line, not a traceback later (reuse as uvicorn does)
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        socket.create_server((host, port), family=family).close()
    except OSError as err:
        raise PatientError(f"cannot listen on {host}:{port} ({err.strerror or err}): give another --port "
                           "or --host") from err
    quiet_transformers()
    lm: LanguageModel | None = None
    if model != "none":
        from verticals.llm import open_model

        spec = model.removeprefix("openai:")
        if remote:  # a person waits: a slow server gets 30 s and one retry, then the template answer
            from verticals.llm import OpenAIModel

            url, _, name = spec.partition("#")
            lm = OpenAIModel(url, name or None, timeout=30.0, max_retries=1, max_concurrency=settings.model_slots)
        else:  # no response cache: it would keep answers drafted from people's reports on disk
            lm = open_model(spec, cache=None)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    web_log = logging.getLogger("verticals.patient.web")
    web_log.addHandler(handler)
    web_log.setLevel(logging.INFO)
    shown = "localhost" if host in ("127.0.0.1", "0.0.0.0") else host
    Console(stderr=True, highlight=False).print(
        Text(f"the patient assistant is starting; open http://{shown}:{port}/ in your browser (Ctrl-C stops it)"))
    import uvicorn

    uvicorn.run(create_app(lambda: lm, settings), host=host, port=port, log_level="warning")
