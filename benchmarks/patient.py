"""The patient assistant: report reading against `radlabels`' reports, and question themes.

Extraction: the patient assistant's report reading against `radlabels`' 1,000 synthetic chest X-ray reports.

Each report's findings, as `verticals.patient` reads them (present, absent, uncertain; the strongest
claim where a report says one several ways), are mapped to radlabels' label ids through the
lexicon's `labels` and compared with `synthetic_labels.json`: per certainty, precision (of the
claims we make, how many the labels share) and recall (of the labels' claims, how many we make),
over the (report, label) pairs either side names. Then the labels we miss or add most often.

Themes: the classifier (MiniLM + logistic regression on the question set's train file) on the test
file: accuracy, the confusion matrix, and how many urgent questions the red-flag rules or the
classifier catch.

Latency: answers with the bundled model drafting (`answer_stream`), for a spread of held-out
questions about the bundled CT reports: seconds to the first piece shown and to the whole answer,
p50 and p95, and how many drafts passed the check.

      .venv/bin/python benchmarks/patient.py              (about 3 min)
      .venv/bin/python benchmarks/patient.py --part latency --questions 24
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from verticals.patient import lexicon, read_report, report_findings
from verticals.patient.findings import strongest

CERTAINTIES = {"definitely present": "present", "definitely absent": "absent", "uncertain": "uncertain"}


def radlabels_samples() -> Path:
    spec = importlib.util.find_spec("radlabels")  # never imported: it needs nltk and radgraph
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("radlabels is not installed: run make install")
    return Path(spec.submodule_search_locations[0]) / "samples"


def extraction(console: Console, worst: int) -> None:
    samples = radlabels_samples()
    gold_all = json.loads((samples / "synthetic_labels.json").read_text())
    lex = lexicon()
    counts: Counter[tuple[str, str]] = Counter()
    errors: Counter[tuple[str, str, str]] = Counter()
    start = time.perf_counter()
    for report_id, labels in gold_all.items():
        found = report_findings(read_report((samples / "synthetic_reports" / f"{report_id}.txt").read_text()))
        claims: dict[str, list[str]] = {}
        for finding, certainty in found.items():
            for label in lex.findings[finding].labels:
                claims.setdefault(label, []).append(certainty)
        ours = {label: strongest(c) for label, c in claims.items()}
        theirs = {label: CERTAINTIES[c] for label, c in labels.items()}
        for label in set(ours) | set(theirs):
            mine, gold = ours.get(label), theirs.get(label)
            counts["ours", mine or ""] += 1
            counts["theirs", gold or ""] += 1
            if mine == gold:
                counts["both", gold or ""] += 1
            else:
                errors[label, gold or "-", mine or "-"] += 1
    seconds = time.perf_counter() - start
    table = Table(title=f"finding extraction on radlabels' {len(gold_all)} synthetic reports "
                        f"({seconds:.1f} s, {len(gold_all) / seconds:.0f} reports/s)")
    for column in ("certainty", "labels' claims", "our claims", "precision", "recall"):
        table.add_column(column, justify="right")
    for certainty in ("present", "absent", "uncertain"):
        both, mine, gold = counts["both", certainty], counts["ours", certainty], counts["theirs", certainty]
        table.add_row(certainty, str(gold), str(mine), f"{both / mine:.3f}" if mine else "-",
                      f"{both / gold:.3f}" if gold else "-")
    console.print(table)
    table = Table(title=f"the {worst} most frequent disagreements")
    for column in ("label", "labels say", "we say", "reports"):
        table.add_column(column, justify="right")
    for (label, gold, mine), n in errors.most_common(worst):
        table.add_row(label, gold, mine, str(n))
    console.print(table)


def theme_accuracy(console: Console) -> None:
    from verticals.patient.classify import ThemeClassifier
    from verticals.patient.themes import questions, themes
    from verticals.patient.urgency import red_flags

    start = time.perf_counter()
    classifier = ThemeClassifier()
    trained = time.perf_counter() - start
    test = questions("test")
    start = time.perf_counter()
    guesses = classifier.guess([q.text for q in test])
    per_question = (time.perf_counter() - start) / len(test)
    names = list(themes())
    accuracy = sum(g.theme == q.theme for g, q in zip(guesses, test)) / len(test)
    unsure = [g.theme == q.theme for g, q in zip(guesses, test) if g.unsure]
    table = Table(title=f"theme of {len(test)} held-out questions: accuracy {accuracy:.3f} (training {trained:.1f} s, "
                        f"{per_question * 1000:.0f} ms a question); rows: true theme, columns: guessed")
    table.add_column("theme")
    for name in names:
        table.add_column(name[:6], justify="right")
    table.add_column("recall", justify="right")
    for name in names:
        row = [g.theme for g, q in zip(guesses, test) if q.theme == name]
        table.add_row(name, *(str(row.count(other) or ".") for other in names), f"{row.count(name) / len(row):.2f}")
    console.print(table)
    urgent = [(g, q) for g, q in zip(guesses, test) if q.theme == "urgent"]
    others = [(g, q) for g, q in zip(guesses, test) if q.theme != "urgent"]
    caught = sum(g.theme == "urgent" or bool(red_flags(q.text)) for g, q in urgent)
    alarms = sum(g.theme == "urgent" or bool(red_flags(q.text)) for g, q in others)
    from verticals.llm import LocalModel
    from verticals.patient.classify import second_opinion

    lm = LocalModel.bundled()
    reconsidered = [second_opinion(lm, q.text, g) for g, q in zip(guesses, test)]
    second = sum(g.theme == q.theme for g, q in zip(reconsidered, test)) / len(test)
    console.print(f"with the bundled model's second opinion on unsure guesses: accuracy {second:.3f} "
                  f"(without: {accuracy:.3f})")
    console.print(f"unsure guesses (p < 0.5): {len(unsure)}, of which right {sum(unsure)}; urgent questions caught "
                  f"by the red-flag rules or the classifier: {caught} of {len(urgent)}; urgent notice on other "
                  f"questions: {alarms} of {len(others)}")


def latency(console: Console, count: int) -> None:
    from importlib import resources

    from verticals.llm import LocalModel
    from verticals.patient.answer import Answer, answer_stream
    from verticals.patient.classify import classifier
    from verticals.patient.themes import questions

    package = resources.files("verticals.patient") / "reports"
    reports = [read_report((package / f"ct_{i:02d}.txt").read_text("utf-8")) for i in range(1, 11)]
    asked = list(questions("test"))[:: max(1, 240 // count)][:count]
    model, themes_of = LocalModel.bundled(), classifier()
    answer_stream(reports[0], "warm up", model=None, classifier=themes_of).__next__()  # loads the encoder
    firsts, wholes, from_model = [], [], 0
    for i, question in enumerate(asked):
        start, first = time.perf_counter(), None
        for item in answer_stream(reports[i % len(reports)], question.text, model=model, classifier=themes_of):
            if first is None and not isinstance(item, Answer):
                first = time.perf_counter() - start
            if isinstance(item, Answer):
                from_model += item.source == "model"
        wholes.append(time.perf_counter() - start)
        firsts.append(first if first is not None else wholes[-1])
    table = Table(title=f"answer latency with the bundled model drafting, {len(asked)} questions "
                        f"({from_model} answers from the model, the rest from templates)")
    for column in ("measure", "p50 s", "p95 s"):
        table.add_column(column, justify="right")
    for name, values in (("first piece shown (an urgent notice, or the answer)", firsts), ("whole answer", wholes)):
        ordered = sorted(values)
        p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
        table.add_row(name, f"{ordered[len(ordered) // 2]:.2f}", f"{p95:.2f}")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worst", type=int, default=12, help="disagreements listed")
    parser.add_argument("--part", choices=["all", "extraction", "themes", "latency"], default="all")
    parser.add_argument("--questions", type=int, default=24, help="questions timed in the latency part")
    args = parser.parse_args()
    console = Console(width=130)
    if args.part in ("all", "extraction"):
        extraction(console, args.worst)
    if args.part in ("all", "themes"):
        theme_accuracy(console)
    if args.part in ("all", "latency"):
        latency(console, args.questions)


if __name__ == "__main__":
    main()
