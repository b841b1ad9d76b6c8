"""The SERSAL loop as resumable stages under one run folder.

annotate -> teach -> check -> reverse-tune, for `loops` rounds, then evaluate against gold labels on
the held-out test rows (the only place gold labels are read). Every stage writes its output
atomically (a temporary name, then a rename) and is skipped when that output exists, so a killed run
restarted with the same command continues from the last finished stage with the same result. LLM
answers also go to a response cache in the run folder: an annotation killed half-way resumes too.

Run folder:
    run.json               dataset, annotator and settings (a restart must match them)
    split.json             row indices: train (teaches), check (gate, early stopping), test (evaluation)
    loop_<k>/annotations.npy, small_model/, small_probs.npy, quality.json, tune.jsonl, tuned/,
                           tuned_check.npy + tuning_check.json (did the tuned LLM move away from the small model?)
    oracle/                the same small model trained on gold labels (evaluation only)
    results.json, samples.jsonl, report.html, *.png
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from verticals.files import write_array, write_text
from verticals.serval.annotate import LLMAnnotator, SimulatedAnnotator
from verticals.serval.config import ServalConfig, ServalError
from verticals.serval.datasets import TabularData
from verticals.serval.prompts import PromptTemplate
from verticals.serval.quality import (
    STABILITY_ROWS,
    Quality,
    TeacherCheck,
    TuningCheck,
    check_teacher,
    judge,
    judge_tuning,
)
from verticals.serval.reverse import confident_rows, examples, hosted_instructions, reverse_tune, write_jsonl

Say = Callable[[str], None]
#: what each part of `run.json` is, for the refusal of a changed run
_CHANGED = {"dataset": "the dataset name", "rows": "the number of rows",
            "data": "the table (its values, labels or metadata)", "llm": "--llm",
            "annotator": "the annotator (the model's weights, or the simulation)", "template": "the prompt template"}


@dataclass
class LoopRecord:
    """What one loop produced, in memory (everything is also on disk)."""

    index: int
    annotations: np.ndarray
    small_probs: np.ndarray
    quality: Quality
    tuned: Path | None = None
    tune_examples: int = 0
    tuning: TuningCheck | None = None
    notes: list[str] = field(default_factory=list)
    unreadable: int = 0
    teacher: TeacherCheck | None = None  # loop 0: does the zero-shot LLM say anything about this table?


class SersalRun:
    """One run of the loop in `folder`; `run()` does (or finishes) it and returns the loops.

    Args:
        data (`TabularData`): the table; its gold labels (if any) are used by `evaluate` only.
        annotator: an `LLMAnnotator` or a `SimulatedAnnotator`.
        folder (`Path`): the run folder (created; a folder of another run is an error).
        config (`ServalConfig`): the settings.
        llm_spec (`str`): how the annotator was named (recorded in `run.json`).
        force (`bool`): go on when the teacher check finds the LLM says little about the table.
    """

    def __init__(self, data: TabularData, annotator: LLMAnnotator | SimulatedAnnotator, folder: Path,
                 config: ServalConfig, *, llm_spec: str, template: PromptTemplate | None = None,
                 progress: bool = True, say: Say | None = None, force: bool = False) -> None:
        self.data, self.annotator, self.folder, self.config = data, annotator, Path(folder), config
        self.force = force
        self.template = template or PromptTemplate.load()
        self.progress = progress
        self.say = say or (lambda message: None)
        self._tuned: tuple[Path, LLMAnnotator] | None = None
        self._settings = {"dataset": data.meta.name, "rows": len(data), "data": data.fingerprint(), "llm": llm_spec,
                          "annotator": annotator.name, "config": config.to_dict(),
                          "template": self.template.__dict__ | {"choices": list(self.template.choices)}}
        self._claim()
        self.split = self._stage_json(self.folder / "split.json", self._make_split)

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> list[LoopRecord]:
        """All loops (finished ones are read back), stopping when the gate says so."""
        loops: list[LoopRecord] = []
        llm = self.annotator
        for k in range(self.config.loops):
            last = k == self.config.loops - 1
            record = self._loop(k, llm, loops[-1] if loops else None, last)
            loops.append(record)
            if record.quality.stop:
                break
            if record.tuned is None:
                self.say(f"loop {k}: nothing was tuned, so another loop would repeat this one; stopping")
                break
            if record.tuning is not None and not record.tuning.kept:
                break
            llm = self._tuned_annotator(record.tuned)
        return loops

    def _loop(self, k: int, llm: Any, previous: LoopRecord | None, last: bool) -> LoopRecord:
        where = self.folder / f"loop_{k}"
        where.mkdir(exist_ok=True)
        who = self.annotator.name if k == 0 else "the tuned LLM"
        self.say(f"loop {k}: annotating {len(self.data)} rows with {who}")
        labels = self._stage_npy(where / "annotations.npy", lambda: self._annotate(llm, where))
        unreadable = int(json.loads((where / "annotation.json").read_text())["unreadable"])
        rows = len(self.data)
        if unreadable > self.config.max_unreadable * rows:
            raise ServalError(f"loop {k}: {unreadable} of {rows} rows ({unreadable / rows:.0%}) got "
                              f"no readable answer from the LLM (annotation {self.config.annotation}), more than "
                              f"--max-unreadable {self.config.max_unreadable:g}: try --annotation logprobs, or a model "
                              "that answers in the asked format")
        teacher = None
        if k == 0:
            teacher = TeacherCheck(**self._stage_json(where / "teacher.json", lambda: self._check_teacher(labels)))
            self.say(f"loop 0: teacher check {'passed' if teacher.ok else 'FAILED'}: {teacher.reason}")
            if not teacher.ok and not self.force:
                raise ServalError(f"the LLM says little about this table: {teacher.reason}. A small model taught by "
                                  "it can only copy that. Continue anyway with --force (the report will say so)")
        self.say(f"loop {k}: teaching the small model ({self.config.small_model}, {self.config.noisy})")
        probs, clean = self._teach(where, labels)
        quality = Quality(**self._stage_json(where / "quality.json", lambda: judge(
            labels, probs, self.rows("check"), clean_fraction=clean,
            previous=previous.quality if previous else None,
            previous_probs=previous.small_probs if previous else None, min_agreement=self.config.min_agreement,
            last_loop=last).to_dict()))
        self.say(f"loop {k}: gate {'passed' if quality.passed else 'failed'}: {quality.reason}")
        record = LoopRecord(k, labels, probs, quality, unreadable=unreadable, teacher=teacher)
        if unreadable:
            record.notes.append(f"{unreadable} rows got no readable answer from the LLM and were given 0.5")
        if quality.passed:
            self._reverse(where, record, llm)
        return record

    def _check_teacher(self, labels: np.ndarray) -> dict[str, Any]:
        """The label-free teacher check: spread of its answers, and their ranking in another wording."""
        again, asked = None, np.array([], dtype=int)
        if isinstance(self.annotator, LLMAnnotator):
            asked = self.rows("check")[:STABILITY_ROWS]
            other = "plain" if self.annotator.style == "described" else "described"
            self.say(f"loop 0: asking {len(asked)} check rows again in {other} records (the teacher check)")
            reworded = replace(self.annotator, style=other, progress=False)
            again = reworded.annotate(self.data.subset(asked))
        return check_teacher(labels, again, asked).to_dict()

    def _annotate(self, llm: Any, where: Path) -> np.ndarray:
        """The LLM's soft labels; how many rows got no readable answer goes to `annotation.json` first."""
        labels = llm.annotate(self.data)
        write_text(where / "annotation.json", json.dumps({"unreadable": int(getattr(llm, "unreadable", 0))}) + "\n")
        return labels

    def _teach(self, where: Path, labels: np.ndarray) -> tuple[np.ndarray, float | None]:
        fit_rows = self.rows("train")  # the check rows stay unseen: the gate reads them
        model_dir = where / "small_model"

        def fit() -> np.ndarray:
            targets = soft_targets(labels, self.config.targets)
            model = self.fit_small(targets[fit_rows], fit_rows, noisy=self.config.noisy)
            _save_model(model, model_dir)
            return model.predict_proba(self.x)[:, 1]

        probs = self._stage_npy(where / "small_probs.npy", fit)
        saved = model_dir / "small_model.json"  # boosted trees are not saved: no clean fraction
        clean = json.loads(saved.read_text()).get("clean_fraction_") if saved.is_file() else None
        return probs, clean

    def fit_small(self, targets: np.ndarray, rows: np.ndarray, *, noisy: str) -> Any:
        """A fresh small model fitted on `targets` (soft or gold) for `rows`."""
        from verticals.serval.small_model import BoostedTreesClassifier, FTTransformerClassifier

        if self.config.small_model == "boosted_trees":
            model: Any = BoostedTreesClassifier(categorical=self.categorical, seed=self.config.seed)
        else:
            model = FTTransformerClassifier(categorical=self.categorical, epochs=self.config.epochs, noisy=noisy,
                                            seed=self.config.seed, progress=self.progress)
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a small model's matmuls are tiny: more threads only wait on each other
        try:
            return model.fit(self.x[rows], targets)
        finally:
            torch.set_num_threads(threads)

    def _reverse(self, where: Path, record: LoopRecord, llm: Any) -> None:
        if isinstance(llm, SimulatedAnnotator):
            record.notes.append("reverse tuning skipped: a simulated annotator has no weights to tune")
            return
        chosen = confident_rows(record.small_probs, self.rows("train"), share=self.config.confident_share,
                                limit=self.config.tune_examples, seed=self.config.seed + record.index)
        records = examples(self.data, chosen, self.template, self.config.style)
        record.tune_examples = len(records)
        write_jsonl(records, where / "tune.jsonl")
        model = llm.model
        if not model.tunable:
            record.notes.append(hosted_instructions(where / "tune.jsonl", _served_name(model)))
            self.say(record.notes[-1])
            return
        tuned = where / "tuned"
        if not (tuned / "adapter_config.json").is_file():
            partial = where / "tuned.partial"
            self.say(f"loop {record.index}: reverse-tuning the LLM on {len(records)} confident rows "
                     f"(LoRA, DropBP {self.config.drop_rate})")
            fresh = model.copy_for_tuning()  # tuning changes the weights in memory: not the annotator's
            auto = reverse_tune(fresh, records, partial, steps=self.config.tune_steps,
                                batch_size=self.config.tune_batch_size, lr=self.config.tune_lr,
                                drop_rate=self.config.drop_rate, seed=self.config.seed, progress=self.progress)
            if auto:
                self.say(f"loop {record.index}: {auto}")
            del fresh  # the check below loads the adapter again: do not hold two copies
            shutil.rmtree(partial / "checkpoints", ignore_errors=True)
            partial.replace(tuned)
        record.tuned = tuned
        check = self.rows("check")
        after = self._stage_npy(where / "tuned_check.npy",
                                lambda: self._tuned_annotator(tuned).annotate(self.data.subset(check)))
        verdict = where / "tuning_check.json"
        if verdict.is_file() and "se" not in json.loads(verdict.read_text()):
            verdict.unlink()  # judged by an older, biased rule ("agrees more than before"): judge again
        record.tuning = TuningCheck(**self._stage_json(verdict, lambda: judge_tuning(
            record.small_probs[check], record.annotations[check], after, seed=self.config.seed).to_dict()))
        self.say(f"loop {record.index}: {record.tuning.reason}")
        if not record.tuning.kept:
            rate = _dropbp_rate(self.config.drop_rate, tuned)
            hint = (f" (DropBP {rate} was on: on a small model its biased gradient can stop the "
                    "LLM from learning, see docs/dropbp.md; try --drop-rate 0)") if rate else ""
            record.notes.append(f"reverse tuning set aside: {record.tuning.reason}{hint}")

    def _tuned_annotator(self, adapter: Path) -> LLMAnnotator:
        """The LLM with `adapter` on, loaded once: it labels the check rows, the next loop and the test rows."""
        if self._tuned is not None and self._tuned[0] == adapter:
            return self._tuned[1]
        self._tuned = None  # drop our reference to the previous loop's tuned LLM (the caller may still hold it)
        annotator = self.annotator
        assert isinstance(annotator, LLMAnnotator)
        model = annotator.model.with_adapter(adapter)
        self._tuned = (adapter, LLMAnnotator(model, method=annotator.method, style=annotator.style,
                                             votes=annotator.votes, template=annotator.template,
                                             progress=self.progress))
        return self._tuned[1]

    def tuned_test_labels(self, record: LoopRecord) -> np.ndarray | None:
        """The tuned LLM's soft labels on the test rows (read back when already computed)."""
        tuned = record.tuned
        if tuned is None:
            return None
        test = self.rows("test")
        return self._stage_npy(self.folder / f"loop_{record.index}" / "tuned_test.npy",
                               lambda: self._tuned_annotator(tuned).annotate(self.data.subset(test)))

    def oracle(self) -> np.ndarray | None:
        """The same small model trained on gold labels (evaluation only): P(positive) for every row."""
        labels = self.data.labels
        if labels is None:
            return None
        rows = self.rows("train")

        def fit() -> np.ndarray:
            self.say("oracle: the same small model on gold labels (for evaluation)")
            model = self.fit_small(labels[rows].astype(float), rows, noisy="none")
            return model.predict_proba(self.x)[:, 1]

        return self._stage_npy(self.folder / "oracle" / "probs.npy", fit)

    # -- data -----------------------------------------------------------------------------------
    @cached_property
    def _encoded(self) -> tuple[np.ndarray, list[tuple[int, int]]]:
        return self.data.encode()

    @property
    def x(self) -> np.ndarray:
        return self._encoded[0]

    @property
    def categorical(self) -> list[tuple[int, int]]:
        return self._encoded[1]

    @property
    def llm_spec(self) -> str:
        return str(self._settings["llm"])

    def rows(self, part: str) -> np.ndarray:
        return np.asarray(self.split[part], dtype=np.int64)

    def _make_split(self) -> dict[str, list[int]]:
        """A seeded random split, made without labels: test, then check (a fifth of the rest), then train."""
        order = np.random.default_rng(self.config.seed).permutation(len(self.data))
        n_test = int(round(self.config.test_fraction * len(order)))
        n_check = int(round(0.2 * (len(order) - n_test)))
        return {"test": sorted(order[:n_test].tolist()), "check": sorted(order[n_test:n_test + n_check].tolist()),
                "train": sorted(order[n_test + n_check:].tolist())}

    # -- the run folder -------------------------------------------------------------------------
    def _claim(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        file = self.folder / "run.json"
        if file.is_file():
            before, now = json.loads(file.read_text()), json.loads(json.dumps(self._settings))
            if before == now:
                return
            older = (set(before) ^ set(now)) | (set(before.get("config", {})) ^ set(now["config"]))
            if older:
                raise ServalError(f"{self.folder} holds a run made by another version of verticals (settings "
                                  f"{', '.join(sorted(older))}); choose another --out, or delete the folder "
                                  "(`make clean-runs` for runs/)")
            changed = [_CHANGED[k] for k in now if k != "config" and before[k] != now[k]]
            changed += [f"--{k.replace('_', '-')}" for k in now["config"] if before["config"][k] != now["config"][k]]
            raise ServalError(f"{self.folder} holds a run with other settings or inputs ({', '.join(changed)} "
                              "changed): its work does not apply; rerun the same command to resume it, or choose "
                              "another --out")
        write_text(file, json.dumps(self._settings, indent=2, sort_keys=True) + "\n")

    def _stage_json(self, file: Path, compute: Callable[[], Any]) -> Any:
        if file.is_file():
            return json.loads(file.read_text())
        value = compute()
        write_text(file, json.dumps(value, indent=2, sort_keys=True) + "\n")
        return value

    def _stage_npy(self, file: Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
        if file.is_file():
            return np.load(file, allow_pickle=False)
        value = np.asarray(compute(), dtype=np.float64)
        write_array(file, value)
        return value


def _served_name(model: Any) -> str:
    """The name a server knows the model by (`OpenAIModel.model`), for the hosted-tuning instructions."""
    name = getattr(model, "model", None)
    return name if isinstance(name, str) and name else "<model>"


def soft_targets(labels: np.ndarray, kind: str = "rank") -> np.ndarray:
    """What the small model learns from: the LLM's probabilities (`raw`) or their quantiles (`rank`).

    A small or untuned LLM ranks rows better than it calibrates them (the bundled 135M model puts
    every heart-disease row between 0.26 and 0.29); quantiles keep the ranking and spread it over
    (0, 1), so the noisy-label learner sees real differences between rows. Ties share a quantile.
    """
    if kind == "raw":
        return labels
    from scipy.stats import rankdata

    return (rankdata(labels) - 0.5) / len(labels)


def _save_model(model: Any, folder: Path) -> None:
    """Save a small model that can be saved (FT-Transformer); boosted trees have no safe format."""
    if not hasattr(model, "save"):
        return
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        model.save(tmp)
    except NotImplementedError:
        return
    shutil.rmtree(folder, ignore_errors=True)
    tmp.replace(folder)


def _dropbp_rate(setting: float | str, tuned: Path) -> float:
    """The drop rate reverse tuning used: the setting, or what `auto` chose (in the adapter's folder)."""
    if setting != "auto":
        return float(setting)
    check = tuned / "dropbp_check.json"
    return float(json.loads(check.read_text()).get("chosen", 0.0)) if check.is_file() else 0.0
