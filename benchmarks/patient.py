"""The patient assistant's report reading against `radlabels`' 1,000 synthetic chest X-ray reports.

Each report's findings, as `verticals.patient` reads them (present, absent, uncertain; the strongest
claim where a report says one several ways), are mapped to radlabels' label ids through the
lexicon's `labels` and compared with `synthetic_labels.json`: per certainty, precision (of the
claims we make, how many the labels share) and recall (of the labels' claims, how many we make),
over the (report, label) pairs either side names. Then the labels we miss or add most often.

      .venv/bin/python benchmarks/patient.py              (a few seconds)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worst", type=int, default=12, help="disagreements listed")
    args = parser.parse_args()
    extraction(Console(width=130), args.worst)


if __name__ == "__main__":
    main()
