"""`evaluate`: a model on a meme set's tasks, with results a person can check.

Everything that can be checked is checked before the model loads: the data folder, the tasks,
the prompt style, every task's records (and images, when the model needs them), the k-shot pools,
the output folder. Then, per task: ask, read the answers, score. Every request goes through the
`verticals.llm` cache, so a killed run, run again, asks nothing twice and ends with the same
`results.json` as an uninterrupted one.

Outputs in `--out`: `results.json` (every setting, per-task scores, what was skipped),
`samples_<task>.jsonl` (each meme's prompt, raw answer, reading, gold label, P(Yes)),
`report.md` and `report.html`.
"""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from verticals.files import write_json as _write_json
from verticals.files import write_text
from verticals.goat.align import trained_on
from verticals.goat.config import GoatError
from verticals.goat.data import LoadReport, Meme, MissingImagesError, load_split, task_folder
from verticals.goat.extract import Reading, read_answer
from verticals.goat.judge import Judge, open_judge
from verticals.goat.metrics import task_scores
from verticals.goat.models import (
    MemeModel,
    MemeRequest,
    check_spec,
    open_meme_model,
    spec_reads_images,
    spec_trains,
)
from verticals.goat.prompts import PromptStyle, choose_shots, get_style, messages_for
from verticals.goat.report import write_report
from verticals.goat.tasks import MemeSetInfo, Task, choose_tasks, read_set_info
from verticals.llm import Message, ResponseCache

SETTINGS_FILE = "settings.json"


@dataclass(frozen=True)
class EvalSettings:
    """What to evaluate, how, and where the results go.

    Example:
        >>> EvalSettings(Path("memes"), "ocr+bundled", Path("runs/x")).prompt
        'zero-shot'
    """

    data: Path
    model: str
    out: Path
    tasks: str = "all"
    prompt: str = "zero-shot"
    split: str = "test"
    seed: int = 0
    limit: int = 0
    probabilities: bool = False
    strict: bool = False
    adapter: Path | None = None
    max_unknown: float = 0.5
    judge: str = ""
    concurrency: int = 8

    def __post_init__(self) -> None:
        check_spec(self.model)
        if self.concurrency < 1:
            raise GoatError(f"concurrency is the number of requests in flight, at least 1; got {self.concurrency}")
        if self.limit < 0:
            raise GoatError(f"limit must be 0 (all memes) or more, got {self.limit}")
        if not 0 <= self.max_unknown <= 1:
            raise GoatError(f"max_unknown is a share of the answers, from 0 to 1; got {self.max_unknown}")

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}

    def results_depend_on(self) -> dict[str, Any]:
        """The settings a resumed run must share with the first (how fast it asks is not one)."""
        return {k: v for k, v in self.to_dict().items() if k not in _NOT_IN_RESULTS}


_JUDGE_HINT = " (a --judge model may read them: run again with a new --out, the answers are cached)"
#: readings of answers that say nothing at all: no judge can find a verdict in them
_NOTHING_SAID = ("empty", "echo")
#: settings that change how a run goes, never what it finds
_NOT_IN_RESULTS = ("concurrency",)


@dataclass
class _TaskPlan:
    task: Task
    memes: list[Meme]
    report: LoadReport
    pool: list[Meme]  # the train split, for k-shot prompts
    skipped: str = ""  # why the task is left out of an `all` run (its images are not there)


def evaluate(settings: EvalSettings, *, cache: ResponseCache | None = None) -> dict[str, Any]:
    """Run `settings` and write its results; returns what `results.json` holds.

    Raises:
        GoatError: a setting, the data or the output folder cannot be used (before any model call), or
            most answers could not be read.
    """
    style = get_style(settings.prompt)
    if settings.probabilities and style.answer == "final_line":
        raise GoatError(f"--probabilities reads P(Yes) from the first answer token, which means nothing for the "
                        f"{style.name} prompt's reasoning; use it with zero-shot or k-shot")
    if (style.shots or spec_trains(settings.model)) and settings.split == "train":
        raise GoatError(f"{'the ' + style.name + ' prompt' if style.shots else settings.model} learns from the train "
                        "split: evaluate another split")
    _check_out(settings)
    _check_adapter(settings)
    info, plans = _plan(settings, style)
    cache = cache if cache is not None else ResponseCache.default()
    judge = open_judge(settings.judge, cache=cache, concurrency=settings.concurrency) if settings.judge else None
    model = open_meme_model(settings.model, cache=cache, adapter=settings.adapter, concurrency=settings.concurrency)
    if settings.probabilities and not model.gives_probabilities:
        raise GoatError(f"{model.spec} gives no probability for some memes; run without --probabilities")
    _write_json(settings.out / SETTINGS_FILE, settings.to_dict())  # the folder is this run's from here on
    tasks: dict[str, Any] = {}
    for plan in plans:
        if plan.skipped:
            print(f"{plan.task.name}: left out ({plan.skipped})", file=sys.stderr)
            continue
        print(f"{plan.task.name}: {len(plan.memes)} memes", file=sys.stderr)
        tasks[plan.task.name] = _run_task(plan, model, style, settings, judge)
    skipped = {p.task.name: p.skipped for p in plans if p.skipped}
    results = _results(settings, info, style, model, tasks, skipped, judge)
    _write_json(settings.out / "results.json", results)
    write_report(settings.out, results)
    return results


def _plan(settings: EvalSettings, style: PromptStyle) -> tuple[MemeSetInfo, list[_TaskPlan]]:
    """Every task's memes, loaded and checked, before anything costly."""
    if not settings.data.is_dir():
        raise GoatError(f"no meme set at {settings.data}: give a folder with one sub-folder per task")
    info = read_set_info(settings.data)
    tasks = choose_tasks(info, settings.tasks)
    if settings.tasks.strip() == "all":
        tasks = [t for t in tasks if task_folder(settings.data, t).is_dir()]
        if not tasks:
            raise GoatError(f"{settings.data} has no task folder; expected some of {', '.join(info.tasks)}")
    images = spec_reads_images(settings.model)
    plans = []
    for task in tasks:
        try:
            memes, report = load_split(settings.data, task, settings.split, images=images, strict=settings.strict)
        except MissingImagesError as err:
            if settings.tasks.strip() != "all":
                raise
            plans.append(_TaskPlan(task, [], LoadReport(""), [], skipped=str(err).split(". ")[0]))
            continue
        if settings.limit:
            memes = memes[: settings.limit]
        pool: list[Meme] = []
        if style.shots or spec_trains(settings.model):
            pool, _ = load_split(settings.data, task, "train", images=images, strict=settings.strict)
            choose_shots(pool, style.shots, settings.seed, "")  # enough of each class?
        plans.append(_TaskPlan(task, memes, report, pool))
    if all(p.skipped for p in plans):
        raise GoatError(f"no task of {settings.data} has its images: {plans[0].skipped}")
    return info, plans


def _check_out(settings: EvalSettings) -> None:
    """Refuse an `out` that is a file, holds something else, or holds a run with other settings."""
    out, file = settings.out, settings.out / SETTINGS_FILE
    if out.exists() and not out.is_dir():
        raise GoatError(f"--out {out} is a file; give a folder")
    if not file.is_file():
        if out.exists() and any(out.iterdir()):
            raise GoatError(f"{out} exists and is not a GOAT run folder; give a new or empty --out")
        return
    try:
        earlier = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        earlier = None
    if not isinstance(earlier, dict):
        raise GoatError(f"{file} is damaged; delete {out} to start over")
    defaults = {f.name: f.default for f in fields(EvalSettings)}  # a run from before a setting existed had its default
    changed = sorted(k for k, v in settings.results_depend_on().items() if earlier.get(k, defaults.get(k)) != v)
    if changed:
        raise GoatError(f"{out} holds a run with other settings ({', '.join(changed)} changed); "
                        "give another --out, or delete the folder to start over")


def _check_adapter(settings: EvalSettings) -> None:
    """An `align` adapter is scored as it learnt: through `ocr+` on the same base weights and OCR,
    and never on the split it learnt."""
    record = trained_on(settings.adapter) if settings.adapter is not None else None
    if record is None:
        return
    if settings.split == record.get("split"):
        raise GoatError(f"the adapter in {settings.adapter} learnt from the {settings.split} split: "
                        "evaluate another split")
    base = record.get("base")
    if not settings.model.startswith("ocr+"):
        raise GoatError(f"the adapter in {settings.adapter} learnt OCR text in the image's place: evaluate it "
                        f"with --model ocr+{base}")
    from verticals.encoders import ocr_engine
    from verticals.llm import open_model

    if open_model(settings.model.removeprefix("ocr+"), lazy=True).fingerprint != record.get("base_fingerprint"):
        raise GoatError(f"the adapter in {settings.adapter} was trained on other weights ({base} as it was then); "
                        f"evaluate it with --model ocr+{base} on those weights, or train it again")
    if ocr_engine() != record.get("ocr"):
        raise GoatError(f"the adapter in {settings.adapter} learnt text read by {record.get('ocr')}, and this "
                        f"OCR is {ocr_engine()}: train it again")


def _run_task(plan: _TaskPlan, model: MemeModel, style: PromptStyle, settings: EvalSettings,
              judge: Judge | None) -> dict[str, Any]:
    if model.trains:
        model.fit(plan.task, plan.pool)
    shots = [choose_shots(plan.pool, style.shots, settings.seed, m.id) for m in plan.memes]
    requests = [MemeRequest(m, messages_for(style, plan.task, m, s, images=model.reads_images))
                for m, s in zip(plan.memes, shots)]
    shown = model.show(requests)
    answers = model.answers(requests, shown, style.max_tokens)
    readings = [read_answer(a, plan.task.adjective, final_line=style.answer == "final_line",
                            opposites=plan.task.opposites) if a is not None else None for a in answers]
    verdicts = _judge(judge, shown, answers, readings) if judge is not None else {}
    predictions = [r.label if r else None for r in readings]
    probabilities = model.yes_probabilities(requests, shown) if settings.probabilities else None
    samples = settings.out / f"samples_{plan.task.name}.jsonl"
    _write_samples(samples, requests, shown, shots, answers, readings, probabilities, verdicts)
    unknown = sum(p is None for p in predictions)
    if plan.memes and unknown > settings.max_unknown * len(plan.memes):
        rules = Counter(r.rule if r else "missing" for r in readings if r is None or r.label is None)
        raise GoatError(f"{plan.task.name}: {unknown} of {len(plan.memes)} answers could not be read as Yes or No "
                        f"({', '.join(f'{n} {k}' for k, n in rules.most_common())}), more than --max-unknown "
                        f"{settings.max_unknown:g} allows: the score would measure the reader, not the model"
                        f"{'' if judge else _JUDGE_HINT}. The "
                        f"answers are in {samples}; first: {(answers[predictions.index(None)] or '(none)')[:100]!r}")
    gold = [m.label for m in plan.memes]
    scores = task_scores(gold, predictions, None if probabilities is None else probabilities.tolist(),
                         seed=settings.seed)
    scores["answers"] = dict(Counter(r.rule if r else "missing" for r in readings))
    scores["judged"] = len(verdicts)
    scores["slices"] = _slices(plan.memes, predictions)
    scores["loading"] = plan.report.to_dict()
    return scores


def _slices(memes: list[Meme], predictions: list[int | None]) -> dict[str, dict[str, dict[str, float]]]:
    """Accuracy by each value of each extra field (`sub_label`, `target`, `subtask`, `cue`, ...)."""
    groups: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for meme, prediction in zip(memes, predictions):
        for name, value in meme.extra.items():
            for item in value if isinstance(value, list) else [value]:
                groups[name][str(item)].append(prediction == meme.label)
    return {name: {value: {"n": len(hits), "accuracy": float(np.mean(hits))} for value, hits in sorted(values.items())}
            for name, values in sorted(groups.items())}


def _judge(judge: Judge, shown: list[list[Message]], answers: list[str | None],
           readings: list[Reading | None]) -> dict[int, str]:
    """Send the answers read as unknown to the judge; its verdicts replace those readings (rule
    "judge"). Returns the judge's reply per meme index it saw."""
    unread = [i for i, (a, r) in enumerate(zip(answers, readings))
              if a is not None and r is not None and r.label is None and r.rule not in _NOTHING_SAID]
    if not unread:
        return {}
    replies = judge.reread([_prompt_text(shown[i]) for i in unread], [answers[i] or "" for i in unread])
    for i, (_, reading) in zip(unread, replies):
        if reading.label is not None:
            readings[i] = Reading(reading.label, "judge")
    return {i: reply for i, (reply, _) in zip(unread, replies)}


def _prompt_text(conversation: list[Message]) -> str:
    """The question as text: the last user message, an image part shown as [image]."""
    last = conversation[-1]["content"]
    return last if isinstance(last, str) else "\n".join(p.get("text", "[image]") for p in last)


def _write_samples(file: Path, requests: list[MemeRequest], shown: list[list[Message]], shots: list[list[Meme]],
                   answers: list[str | None], readings: list[Any], probabilities: np.ndarray | None,
                   verdicts: dict[int, str]) -> None:
    rows = []
    for i, (request, answer, reading) in enumerate(zip(requests, answers, readings)):
        meme = request.meme
        rows.append({"id": meme.id, "task": meme.task, "shots": [s.id for s in shots[i]],
                     "prompt": _prompt_text(shown[i]), "answer": answer,
                     **({"judge": verdicts[i]} if i in verdicts else {}),
                     "prediction": reading.label if reading else None,
                     "rule": reading.rule if reading else "missing",
                     "gold": meme.label, "probability": None if probabilities is None else float(probabilities[i]),
                     "image": str(meme.image) if meme.image else None,
                     **{f"extra_{k}": v for k, v in meme.extra.items()}})
    write_text(file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def _results(settings: EvalSettings, info: MemeSetInfo, style: PromptStyle, model: MemeModel,
             tasks: dict[str, Any], skipped: dict[str, str], judge: Judge | None) -> dict[str, Any]:
    from verticals import __version__

    f1s, accuracies = [t["macro_f1"] for t in tasks.values()], [t["accuracy"] for t in tasks.values()]
    return {
        "benchmark": "fixture (synthetic, not GOAT-Bench)" if info.fixture else (info.name or "meme set"),
        "fixture": info.fixture,
        "settings": settings.to_dict(),
        "model": {"spec": model.spec, "fingerprint": model.fingerprint},
        "judge": {"spec": judge.spec, "fingerprint": judge.fingerprint} if judge is not None else None,
        "prompt": {"style": style.name, "fingerprint": style.fingerprint, "template": style.template,
                   "max_tokens": style.max_tokens, "shots": style.shots},
        "versions": {"verticals": __version__, "python": sys.version.split()[0]},
        "overall": {"macro_f1": float(np.mean(f1s)), "accuracy": float(np.mean(accuracies)),
                    "unknown": int(sum(round(t["unknown_rate"] * t["n"]) for t in tasks.values())),
                    "tasks": len(tasks), "memes": int(sum(t["n"] for t in tasks.values()))},
        "tasks": tasks,
        "tasks_left_out": skipped,
    }
