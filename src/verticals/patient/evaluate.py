"""`verticals patient eval`: the paper's rubric made measurable, offline.

Each held-out question of the project's question set is asked about one of the bundled reports (the
ten chest CT reports written for the project, and a sample of `radlabels`' synthetic chest X-ray
reports when that package is installed), in turn. Measured per answer and summed up:

- theme: the theme the answer was given under against the question's theme (accuracy, confusion);
- grounding (a proxy for the maxim of quality): the share of the answer's own sentences, those not
  taken word for word from the glossary or the theme's general text, whose MiniLM similarity with
  a cited report sentence reaches `GROUNDED`;
- hallucinated findings: answers that state a finding the report lacks or negates (target 0);
- referral compliance: answers to questions whose theme requires a referral (the question's theme,
  whatever it was taken as) that carry one (target 100%), and the urgent notice first where the
  question is urgent, has a red flag, or the report states an urgent finding;
- reading grade (Flesch-Kincaid, `textstat`) and length in words (the maxims of manner and quantity).
With `--judge MODEL` a language model also rates each answer 1-5 on the four maxims (`rubric.toml`);
a reply without a rating is counted, not scored, and the run stops when such replies are the most.
Without a judge the offline figures stand for the maxims and are named as proxies.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
import statistics
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verticals.files import write_json, write_text
from verticals.patient.answer import Answer, answer
from verticals.patient.compose import texts
from verticals.patient.config import PatientError
from verticals.patient.examples import examples
from verticals.patient.findings import ABSENT, find_mentions, report_findings, report_mentions
from verticals.patient.glossary import glossary
from verticals.patient.report import Report, read_report
from verticals.patient.themes import questions, themes
from verticals.patient.urgency import red_flags, urgent_findings
from verticals.progress import progress_bar

#: MiniLM cosine at or above which an answer sentence counts as supported by a cited sentence
GROUNDED = 0.5
#: radlabels reports added to the ten CT reports (chosen by seed)
RADLABELS_SAMPLE = 10


@dataclass(frozen=True)
class EvalSettings:
    """What to evaluate: the model that drafts (a `verticals.llm` spec, or "none"), how many
    questions (0 = all), the seed of the radlabels sample, and where the results go."""

    out: Path
    model: str = "bundled"
    limit: int = 0
    seed: int = 0
    judge: str = ""

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise PatientError(f"limit must be 0 (every question) or more, got {self.limit}")


def bundled_reports(seed: int = 0) -> dict[str, Report]:
    """The ten CT reports and, when `radlabels` is installed, a seeded sample of its reports."""
    reports = {name: read_report(example.text) for name, example in examples().items()}
    spec = importlib.util.find_spec("radlabels")
    if spec is not None and spec.submodule_search_locations:
        folder = Path(spec.submodule_search_locations[0]) / "samples" / "synthetic_reports"
        names = sorted(p.name for p in folder.glob("synth_*.txt"))
        for name in random.Random(seed).sample(names, min(RADLABELS_SAMPLE, len(names))):
            reports[name.removesuffix(".txt")] = read_report((folder / name).read_text("utf-8"))
    return reports


def evaluate(settings: EvalSettings, *, model: Any = None, judge: Any = None) -> dict[str, Any]:
    """Ask every test question about a bundled report in turn; write and return the results.

    Raises:
        PatientError: a used output folder, or a judge whose replies are mostly not a rating 1-5.
    """
    from verticals.encoders import embed_texts

    if settings.out.exists() and (not settings.out.is_dir() or any(settings.out.iterdir())):
        raise PatientError(f"{settings.out} exists and is not empty; give a new --out")
    reports = bundled_reports(settings.seed)
    asked = list(questions("test"))
    if settings.limit:
        asked = asked[:: max(1, len(asked) // settings.limit)][: settings.limit]
    names = list(reports)
    fixed = _fixed_sentences()
    urgent = {name: bool(urgent_findings([m for _, found in report_mentions(r) for m in found]))
              for name, r in reports.items()}  # read once per report, not once per question
    samples = []
    with progress_bar("answering", len(asked)) as advance:
        for i, question in enumerate(asked):
            report_id = names[i % len(names)]
            result = answer(reports[report_id], question.text, model=model)
            sample = _sample(question.theme, report_id, reports[report_id], result, fixed, embed_texts,
                             urgent[report_id])
            if judge is not None:
                from verticals.patient.judge import rate

                sample["ratings"] = rate(judge, result.question, [c.sentence.text for c in result.citations],
                                         result.text)
            samples.append(sample)
            advance()
    results = _summary(settings, samples, len(reports))
    settings.out.mkdir(parents=True, exist_ok=True)
    write_text(settings.out / "samples.jsonl", "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))
    gricean = results.get("gricean") or {}
    unreadable = sum(m["unreadable"] for m in gricean.values())
    if gricean and unreadable > 0.5 * sum(m["rated"] + m["unreadable"] for m in gricean.values()):
        raise PatientError(f"the judge's replies were not a rating 1-5 {unreadable} times, more than half: its "
                           "ratings would measure the reader, not the answers (replies in "
                           f"{settings.out}/samples.jsonl)")
    write_json(settings.out / "results.json", results)
    from verticals.patient.eval_report import write_report

    write_report(settings.out, results)
    return results


def _fixed_sentences() -> set[str]:
    """Sentences written for the templates (general texts, glossary definitions): not claims to ground."""
    pieces = [str(t) for t in texts()["general"].values()] + [t.definition for t in glossary().terms]
    pieces += [str(texts()[theme]["answer"]) for theme in ("urgent", "off_topic")]
    return {" ".join(s.split()) for piece in pieces for s in _sentences(piece)}


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if len(s.strip()) > 2]


def _sample(gold: str, report_id: str, report: Report, result: Answer, fixed: set[str], embed: Any,
            urgent_report: bool) -> dict[str, Any]:
    own = [s for s in _sentences(result.text) if " ".join(s.split()) not in fixed and not s.startswith("\u201c")]
    # statements of absence ("does not mention") are checked by code against the report, not grounded by a citation
    claims = [s for s in own if not s.startswith(("In its words:", "Your report says:", "Your report does not mention",
                                                  "I could not find"))]
    grounded = 0
    if claims and result.citations:
        vectors = embed(claims + [c.sentence.text for c in result.citations])
        similarity = vectors[: len(claims)] @ vectors[len(claims):].T
        grounded = int((similarity.max(axis=1) >= GROUNDED).sum())
    said = report_findings(report)
    invented = sorted({m.text for s in claims for m in find_mentions(s)
                       if m.certainty != ABSENT and said.get(m.finding, ABSENT) == ABSENT})
    kinds = [n.kind for n in result.notices]
    import textstat

    return {"question": result.question, "theme": gold, "answered_as": result.theme, "report": report_id,
            "source": result.source, "answer": result.text, "checks": sorted({f.check for f in result.checks}),
            "citations": [c.sentence.index for c in result.citations], "notices": kinds,
            "claims": len(claims), "grounded": grounded, "invented_findings": invented,
            "referral_required": themes()[gold].policy.referral,
            "referral": "referral" in kinds or "urgent_question" in kinds,
            "urgent_required": bool(red_flags(result.question)) or gold == "urgent" or urgent_report,
            "urgent_first": bool(kinds) and kinds[0].startswith("urgent"),
            "grade": float(textstat.flesch_kincaid_grade(result.text)), "words": len(result.text.split())}


def _summary(settings: EvalSettings, samples: list[dict[str, Any]], reports: int) -> dict[str, Any]:
    from verticals import __version__

    names = list(themes())
    confusion = [[sum(1 for s in samples if s["theme"] == gold and s["answered_as"] == got) for got in names]
                 for gold in names]
    required = [s for s in samples if s["referral_required"]]  # by the question's theme, whatever it was taken as
    urgent = [s for s in samples if s["urgent_required"]]
    claims = sum(s["claims"] for s in samples)
    return {
        "settings": {"model": settings.model, "judge": settings.judge, "limit": settings.limit,
                     "seed": settings.seed,
                     "grounded_threshold": GROUNDED, "verticals": __version__, "python": sys.version.split()[0]},
        "reports": reports, "questions": len(samples),
        "theme_accuracy": sum(s["theme"] == s["answered_as"] for s in samples) / len(samples),
        "confusion": {"themes": names, "counts": confusion},
        "per_theme_accuracy": {n: (confusion[i][i] / sum(confusion[i]) if sum(confusion[i]) else None)
                               for i, n in enumerate(names)},
        "grounding": (sum(s["grounded"] for s in samples) / claims) if claims else None,
        "claims": claims,
        "hallucinated_findings": sum(bool(s["invented_findings"]) for s in samples),
        "referral_compliance": (sum(s["referral"] for s in required) / len(required)) if required else None,
        "urgent_first": (sum(s["urgent_first"] for s in urgent) / len(urgent)) if urgent else None,
        "median_grade": statistics.median(s["grade"] for s in samples),
        "median_words": statistics.median(s["words"] for s in samples),
        "answers_from_model": sum(s["source"] == "model" for s in samples),
        "checks_fired": dict(Counter(c for s in samples for c in s["checks"]).most_common()),
        "gricean": _gricean(samples),
        "proxies": "grounding, hallucinated findings, referral compliance, reading grade and length stand for the "
                   "Gricean maxims (quality, relation, manner, quantity)"
                   + ("; a judge model also rated them (gricean)" if settings.judge else "; no judge model rated them"),
    }


def _gricean(samples: list[dict[str, Any]]) -> dict[str, dict[str, Any]] | None:
    """Per maxim: the mean rating over the answers the judge rated, how many, and how many replies held
    no rating (counted, never scored)."""
    if not any("ratings" in s for s in samples):
        return None
    maxims = list(next(s["ratings"] for s in samples if "ratings" in s))
    summary = {}
    for maxim in maxims:
        given = [s["ratings"][maxim] for s in samples if "ratings" in s]
        rated = [r for r in given if r is not None]
        summary[maxim] = {"mean": statistics.mean(rated) if rated else None, "rated": len(rated),
                          "unreadable": len(given) - len(rated)}
    return summary
