"""The SERSAL loop: annotators, prompts, the gate, reverse tuning, the run folder, evaluation and report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from verticals.serval.annotate import LLMAnnotator, SimulatedAnnotator, make_annotator
from verticals.serval.config import ServalConfig, ServalError
from verticals.serval.datasets import load_dataset
from verticals.serval.pipeline import sersal
from verticals.serval.prompts import PromptTemplate, questions, record
from verticals.serval.quality import Quality, TuningCheck, agreement, chance_se, judge, judge_tuning
from verticals.serval.reverse import confident_rows, examples
from verticals.serval.run import SersalRun

FAST = {"epochs": 40}


@pytest.fixture(scope="module")
def heart():
    return load_dataset("heart_disease")


# -- annotators --------------------------------------------------------------------------------
@pytest.mark.parametrize("auc", [0.65, 0.75, 0.85])
def test_simulated_annotator_hits_its_auc(heart, auc: float) -> None:
    labels = SimulatedAnnotator(auc=auc).annotate(heart)
    assert labels.min() >= 0 and labels.max() <= 1
    assert roc_auc_score(heart.labels, labels) == pytest.approx(auc, abs=0.005)


def test_simulated_annotator_is_deterministic_and_its_errors_depend_on_the_knobs(heart) -> None:
    first = SimulatedAnnotator(seed=1).annotate(heart)
    np.testing.assert_array_equal(first, SimulatedAnnotator(seed=1).annotate(heart))
    assert not np.allclose(first, SimulatedAnnotator(seed=2).annotate(heart))
    # a student of the features averages random errors away and learns systematic ones
    x, _ = heart.encode()
    x = (x - x.mean(0)) / x.std(0)
    half = np.arange(len(heart)) % 2 == 0

    def student(labels: np.ndarray) -> float:  # soft-label logistic regression on one half, AUC on the other
        rows = np.r_[x[half], x[half]]
        target = np.r_[np.ones(half.sum()), np.zeros(half.sum())]
        weight = np.r_[labels[half], 1 - labels[half]]
        model = LogisticRegression(max_iter=2000).fit(rows, target, sample_weight=weight)
        return roc_auc_score(heart.labels[~half], model.decision_function(x[~half]))

    random_only = SimulatedAnnotator(systematic=0.0).annotate(heart)
    tilted = SimulatedAnnotator(systematic=1.0, auc=0.7).annotate(heart)
    assert student(random_only) > 0.75 + 0.05  # beats its 0.75 teacher
    assert student(tilted) < student(random_only) - 0.05


def test_simulated_annotator_knows_only_what_the_features_tell_unless_told_otherwise() -> None:
    framingham = load_dataset("framingham_chd")  # its features allow about 0.72
    with pytest.raises(ServalError, match="allow a teacher of AUC at most 0.7"):
        SimulatedAnnotator(auc=0.8).annotate(framingham)
    labels = SimulatedAnnotator(auc=0.8, signal="label").annotate(framingham)
    assert roc_auc_score(framingham.labels, labels) == pytest.approx(0.8, abs=0.005)
    # Platt-scaled: the soft labels' mean is the class balance, not 0.5
    assert labels.mean() == pytest.approx(framingham.labels.mean(), abs=0.02)
    with pytest.raises(ServalError, match="signal should be features or label"):
        SimulatedAnnotator(signal="oracle")


def test_simulated_annotator_needs_gold_labels_and_a_sane_auc(heart) -> None:
    with pytest.raises(ServalError, match="auc"):
        SimulatedAnnotator(auc=1.2)
    unlabelled = type(heart)(heart.meta, heart.frame, None)
    with pytest.raises(ServalError, match="gold labels"):
        SimulatedAnnotator().annotate(unlabelled)
    one_positive = heart.subset(np.r_[np.flatnonzero(heart.labels == 0)[:30], np.flatnonzero(heart.labels == 1)[:1]])
    with pytest.raises(ServalError, match="at least 2 rows of each class"):
        SimulatedAnnotator().annotate(one_positive)


def test_make_annotator_reads_simulated_specs() -> None:
    made = make_annotator("simulated:auc=0.8,systematic=0.1,seed=3,signal=label")
    assert isinstance(made, SimulatedAnnotator)
    assert (made.auc, made.systematic, made.seed, made.signal) == (0.8, 0.1, 3, "label")
    with pytest.raises(ServalError, match="unknown option"):
        make_annotator("simulated:auc=0.8,noise=2")
    with pytest.raises(ServalError, match="bad simulated"):
        make_annotator("simulated:auc=high")


class _Scripted:
    """A stand-in model for the verbalised and vote paths: replies come from a script."""

    fingerprint = "scripted"

    def __init__(self, replies: list[str]) -> None:
        self.replies, self.calls = replies, []

    def chat_batch(self, chats, **kwargs):  # type: ignore[no-untyped-def]
        self.calls.append(kwargs)
        return [self.replies[(i + len(self.calls)) % len(self.replies)] for i in range(len(chats))]


def test_verbalized_confidence_is_parsed_and_unreadable_replies_are_counted(heart) -> None:
    few = heart.subset(np.arange(7))
    replies = ["70%", "0.2", "I am not sure", "85", "1", "150", "1.0"]
    annotator = LLMAnnotator(_Scripted(replies), method="verbalized", progress=False)
    got = annotator.annotate(few)
    # "1" is 1 percent (it read as 100% before); "150" and the words are no confidence: 0.5, and counted
    assert sorted(got.tolist()) == sorted([0.7, 0.2, 0.5, 0.85, 0.01, 0.5, 1.0])
    assert annotator.unreadable == 2


def test_vote_is_the_share_of_yes_over_seeded_samples(heart) -> None:
    model = _Scripted(["Yes.", "no", "yes", "No"])
    got = LLMAnnotator(model, method="vote", votes=4, progress=False).annotate(heart.subset(np.arange(3)))
    assert got.tolist() == [0.5, 0.5, 0.5]
    assert [c["seed"] for c in model.calls] == [0, 1, 2, 3] and all(c["temperature"] == 1.0 for c in model.calls)


def test_a_vote_that_is_neither_yes_nor_no_is_no_vote(heart) -> None:
    annotator = LLMAnnotator(_Scripted(["Yes.", "Maybe", "I cannot say"]), method="vote", votes=3, progress=False)
    got = annotator.annotate(heart.subset(np.arange(3)))
    # each row hears one "Yes" and two non-answers: 1.0, where counting a non-answer as "no" said 0.33
    assert got.tolist() == [1.0, 1.0, 1.0] and annotator.unreadable == 0
    silent = LLMAnnotator(_Scripted(["Maybe"]), method="vote", votes=2, progress=False)
    assert silent.annotate(heart.subset(np.arange(2))).tolist() == [0.5, 0.5] and silent.unreadable == 2


def test_a_run_stops_when_too_many_rows_get_no_readable_answer(heart, tmp_path: Path) -> None:
    few = heart.subset(np.arange(120))
    mumbling = LLMAnnotator(_Scripted(["70%", "I am not sure", "Hard to say", "40%"]), method="verbalized",
                            progress=False)
    config = ServalConfig(annotation="verbalized", **FAST)
    with pytest.raises(ServalError, match=r"loop 0: 60 of 120 rows \(50%\) got no readable answer from the LLM"):
        SersalRun(few, mumbling, tmp_path / "stop", config, llm_spec="scripted").run()
    assert json.loads((tmp_path / "stop" / "loop_0" / "annotation.json").read_text()) == {"unreadable": 60}
    patient = ServalConfig(annotation="verbalized", max_unreadable=0.6, **FAST)
    loops = SersalRun(few, mumbling, tmp_path / "go", patient, llm_spec="scripted", force=True).run()
    assert loops[0].unreadable == 60 and "60 rows got no readable answer" in loops[0].notes[0]


# -- prompts -----------------------------------------------------------------------------------
def test_described_and_plain_records(heart) -> None:
    template = PromptTemplate.load()
    row = heart.frame.iloc[0]
    described = record(row, heart.meta, template, "described")
    assert "- resting systolic blood pressure: 145 mm Hg" in described
    assert "chest pain type: typical angina" in described
    assert "trestbps: 145" in record(row, heart.meta, template, "plain")
    missing = heart.frame[heart.frame["ca"].isna()].iloc[0]
    assert "major vessels coloured by fluoroscopy: not recorded" in record(missing, heart.meta, template)
    chat = questions(heart.subset(np.arange(1)), template)[0]
    assert chat[0]["role"] == "system" and heart.meta.question in chat[1]["content"]
    assert "num" not in record(row, heart.meta, template, "plain")  # the target never reaches a prompt


def test_a_user_template_replaces_the_packaged_one(tmp_path: Path) -> None:
    text = (Path(__file__).parents[2] / "src/verticals/serval/prompts.toml").read_text()
    file = tmp_path / "mine.toml"
    file.write_text(text.replace("Answer Yes or No.", "Reply Yes or No only."))
    assert "Reply Yes or No only." in PromptTemplate.load(file).user
    file.write_text('system = "x"\n')
    with pytest.raises(ServalError, match="needs"):
        PromptTemplate.load(file)


# -- the gate and reverse tuning ----------------------------------------------------------------
def test_agreement_is_scikit_learns_auc_of_the_median_cut() -> None:
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    for n in (7, 40, 81):
        llm, small = rng.random(n), np.round(rng.random(n), 1)  # rounded: ties in the scores count half
        cut = llm > np.median(llm)
        assert agreement(llm, small) == pytest.approx(roc_auc_score(cut, small), abs=1e-12)


def test_agreement_reads_the_llm_ranking_not_its_calibration() -> None:
    llm = np.array([0.9, 0.91, 0.92, 0.95, 0.97, 0.99])  # all "Yes", but ranked
    assert agreement(llm, np.arange(6) / 10) == 1.0
    assert agreement(llm, -np.arange(6) / 10) == 0.0
    assert agreement(np.full(6, 0.7), np.arange(6)) == 0.5


def test_gate_rules() -> None:
    rng = np.random.default_rng(0)
    llm = rng.random(200)
    good, bad = llm + 0.1 * rng.random(200), rng.random(200)
    check = np.arange(100, 200)
    failed = judge(llm, bad, check, clean_fraction=0.5, previous=None, previous_probs=None)
    assert not failed.passed and failed.stop and "did not learn" in failed.reason
    few = np.arange(170, 200)  # 30 rows: agreement 0.6 is real but a random ranking reaches it 5% of the time
    weak = llm + 1.5 * np.random.default_rng(1).random(200)
    unsure = judge(llm, weak, few, clean_fraction=0.5, previous=None, previous_probs=None)
    assert 0.55 < unsure.agreement < 0.5 + 1.645 * chance_se(30)
    assert not unsure.passed and "30 check rows" in unsure.reason and "--max-rows" in unsure.reason
    first = judge(llm, good, check, clean_fraction=0.5, previous=None, previous_probs=None)
    assert first.passed and not first.stop
    worse = Quality(agreement=0.999, clean_fraction=0.5, drift=None, passed=True, stop=False, reason="")
    fell = judge(llm, good, check, clean_fraction=0.5, previous=worse, previous_probs=good)
    assert not fell.passed and "fell" in fell.reason
    same = judge(llm, good, check, clean_fraction=0.5, previous=first, previous_probs=good)
    assert same.passed and same.stop and "converged" in same.reason
    assert judge(llm, good, check, clean_fraction=0.5, previous=None, previous_probs=None, last_loop=True).stop


def test_confident_rows_are_the_ends_of_the_small_models_ranking() -> None:
    rng = np.random.default_rng(0)
    probs = 0.4 + 0.2 * rng.random(101)  # compressed, as a small model trained on ranks gives: none is 0.8 sure
    rows = np.arange(1, 101)  # row 0 is not a training row
    chosen = confident_rows(probs, rows, share=0.25, limit=400, seed=0)
    assert len(chosen.rows) == 50 and chosen.labels.sum() == 25 and 0 not in chosen.rows
    top, bottom = probs[chosen.rows[chosen.labels == 1]], probs[chosen.rows[chosen.labels == 0]]
    assert bottom.max() < top.min()
    assert top.min() >= np.quantile(probs[rows], 0.75) - 1e-9 and bottom.max() <= np.quantile(probs[rows], 0.25) + 1e-9
    assert len(confident_rows(probs, rows, share=0.25, limit=20).rows) == 20  # the limit caps it, still balanced
    again = confident_rows(probs, rows, share=0.25, limit=400, seed=0)
    np.testing.assert_array_equal(again.rows, chosen.rows)


def test_confident_rows_break_ties_at_random_and_never_overlap() -> None:
    flat = np.full(40, 0.5)  # a table sorted by class would otherwise hand its order to the labels
    chosen = confident_rows(flat, np.arange(40), share=0.25, limit=400, seed=0)
    assert sorted(chosen.rows[chosen.labels == 1].tolist()) != list(range(30, 40))
    assert not set(chosen.rows[chosen.labels == 1]) & set(chosen.rows[chosen.labels == 0])
    two = confident_rows(np.array([0.2, 0.9]), np.arange(2), share=0.5, limit=400)
    assert dict(zip(two.rows.tolist(), two.labels.tolist())) == {1: 1, 0: 0}
    with pytest.raises(ServalError, match="at least 2"):
        confident_rows(np.array([0.3]), np.arange(1), share=0.25, limit=400)


def test_tuning_examples_answer_with_the_small_models_label(heart) -> None:
    chosen = confident_rows(np.linspace(0, 1, 40), np.arange(40), share=0.25, limit=6)
    records = examples(heart, chosen, PromptTemplate.load(), "described")
    answers = [r["messages"][-1]["content"] for r in records]
    assert answers == ["Yes" if label else "No" for label in chosen.labels]
    assert records[0]["messages"][1]["content"].startswith("Patient record:")


# -- the whole run -----------------------------------------------------------------------------
def test_sersal_simulated_small_model_beats_its_teacher(tmp_path: Path) -> None:
    results = sersal("heart_disease", "simulated:auc=0.75", tmp_path / "run", ServalConfig(epochs=60), progress=False)
    table = results["table"]
    assert table["small_model"]["auc"] > table["llm_zero_shot"]["auc"] + 0.05
    assert results["oracle_recovery"] > 0.85
    assert table["tuned_llm"] is None and "simulated" in results["loops"][0]["notes"][0]
    assert results["tuned_llm_kept"] is None  # nothing was tuned: neither kept nor set aside
    for name in ("results.json", "samples.jsonl", "report.html", "auc.png", "roc.png", "calibration.png", "loops.png"):
        assert (tmp_path / "run" / name).is_file(), name
    sample = json.loads((tmp_path / "run" / "samples.jsonl").read_text().splitlines()[0])
    assert set(sample) == {"row", "split", "gold", "llm", "small_model", "tuned_llm", "oracle"}  # no patient data
    page = (tmp_path / "run" / "report.html").read_text()
    assert "SERSAL on" in page and page.count('src="data:image/png;base64,') == 4  # the page stands alone
    assert "no calibration curve" not in page and "<dt>clean fraction</dt>" in page
    assert 'src="auc.png"' not in page


def test_a_killed_run_resumes_from_the_last_stage_with_the_same_result(tmp_path: Path, monkeypatch) -> None:
    config = ServalConfig(**FAST)
    whole = sersal("heart_failure", "simulated:auc=0.7", tmp_path / "whole", config, progress=False)

    calls = {"fit": 0}
    real_fit = SersalRun.fit_small

    def dying_fit(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["fit"] += 1
        raise KeyboardInterrupt

    monkeypatch.setattr(SersalRun, "fit_small", dying_fit)
    with pytest.raises(KeyboardInterrupt):
        sersal("heart_failure", "simulated:auc=0.7", tmp_path / "killed", config, progress=False)
    assert (tmp_path / "killed" / "loop_0" / "annotations.npy").is_file()
    assert not (tmp_path / "killed" / "loop_0" / "small_probs.npy").exists()

    monkeypatch.setattr(SersalRun, "fit_small", real_fit)
    monkeypatch.setattr(SimulatedAnnotator, "annotate", lambda *a: pytest.fail("annotation ran again"))
    resumed = sersal("heart_failure", "simulated:auc=0.7", tmp_path / "killed", config, progress=False)
    assert resumed["table"] == whole["table"]
    assert not list((tmp_path / "killed").rglob("*.tmp"))


def test_a_run_folder_refuses_other_settings(tmp_path: Path) -> None:
    sersal("heart_failure", "simulated:auc=0.7", tmp_path, ServalConfig(**FAST), progress=False)
    with pytest.raises(ServalError, match="other settings"):
        sersal("heart_failure", "simulated:auc=0.7", tmp_path, ServalConfig(epochs=41), progress=False)
    settings = json.loads((tmp_path / "run.json").read_text())
    settings["config"]["confidence"] = settings["config"].pop("confident_share")  # as an older version wrote it
    (tmp_path / "run.json").write_text(json.dumps(settings))
    with pytest.raises(ServalError, match="another version of verticals .settings confidence, confident_share."):
        sersal("heart_failure", "simulated:auc=0.7", tmp_path, ServalConfig(**FAST), progress=False)


def test_a_run_folder_refuses_a_changed_table_or_annotator(tmp_path: Path) -> None:
    from verticals.serval.datasets import TabularData

    table = load_dataset("heart_failure")
    first = sersal(table, "simulated:auc=0.7", tmp_path, ServalConfig(**FAST), progress=False)
    flipped = TabularData(table.meta, table.frame, 1 - table.labels)  # same rows and size, other labels
    with pytest.raises(ServalError, match=r"other settings or inputs \(the table \(its values, labels or metadata\) "
                                          r"changed\)"):
        sersal(flipped, "simulated:auc=0.7", tmp_path, ServalConfig(**FAST), progress=False)
    edited = table.frame.copy()
    edited.iloc[0, 0] = edited.iloc[1, 0]
    with pytest.raises(ServalError, match="the table"):
        sersal(TabularData(table.meta, edited, table.labels), "simulated:auc=0.7", tmp_path, ServalConfig(**FAST),
               progress=False)
    with pytest.raises(ServalError, match=r"--llm, the annotator \(the model's weights, or the simulation\) changed"):
        sersal(table, "simulated:auc=0.8", tmp_path, ServalConfig(**FAST), progress=False)
    assert sersal(table, "simulated:auc=0.7", tmp_path, ServalConfig(**FAST), progress=False)["table"] == first["table"]


def test_a_relative_run_folder_keeps_every_stage_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    sersal("heart_failure", "simulated:auc=0.65", "runs/study", ServalConfig(max_rows=120, **FAST), progress=False)
    run = tmp_path / "runs" / "study"
    for stage in ("split.json", "loop_0/annotations.npy", "loop_0/small_probs.npy", "loop_0/quality.json",
                  "oracle/probs.npy", "results.json"):
        assert (run / stage).is_file(), stage
    assert not (run / "runs").exists()  # a stage path joined onto the folder twice


def test_max_rows_takes_a_seeded_subset(tmp_path: Path) -> None:
    results = sersal("framingham_chd", "simulated:auc=0.65", tmp_path, ServalConfig(max_rows=200, **FAST),
                     progress=False)
    assert results["rows"] == 200 and sum(results["split"].values()) == 200


class _TeacherWithWeights(LLMAnnotator):
    """A tiny local model as the LLM; its first-loop labels come from a simulated teacher so the gate passes."""

    def annotate(self, data):  # type: ignore[no-untyped-def]
        return SimulatedAnnotator(auc=0.9, signal="label").annotate(data)


def _tuning_run(tiny_model_dir: Path, folder: Path, monkeypatch: pytest.MonkeyPatch, kept: bool):  # type: ignore[no-untyped-def]
    """Two loops on a tiny local model, with the tuned-LLM check's verdict forced to `kept`."""
    from verticals.llm.local import LocalModel
    from verticals.serval import run as run_module

    verdicts = []

    def forced(small, before, after, seed):  # type: ignore[no-untyped-def]
        verdicts.append((small, before, after))
        return TuningCheck(0.6, 0.7 if kept else 0.5, kept, "forced")

    monkeypatch.setattr(run_module, "judge_tuning", forced)
    data = load_dataset("heart_failure")  # enough check rows (48) for the gate to tell learning from chance
    annotator = _TeacherWithWeights(LocalModel(tiny_model_dir), progress=False)
    config = ServalConfig(loops=2, tune_steps=2, tune_examples=8, drop_rate=0.5, min_agreement=0.5, **FAST)
    run = SersalRun(data, annotator, folder, config, llm_spec=str(tiny_model_dir), progress=False)
    loops = run.run()
    small, before, after = verdicts[0]
    check = run.rows("check")  # the tuned LLM was asked about the check rows, beside the small model's view of them
    assert len(after) == len(check) == len(small) and np.array_equal(before, loops[0].annotations[check])
    np.testing.assert_array_equal(np.load(folder / "loop_0" / "tuned_check.npy"), after)
    return run, loops


def _count_adapter_loads(monkeypatch: pytest.MonkeyPatch) -> list:
    """Record the `adapter` of every `LocalModel` built from now on."""
    from verticals.llm import local

    adapters = []

    class Counted(local.LocalModel):
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            adapters.append(kwargs.get("adapter"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(local, "LocalModel", Counted)
    return adapters


def test_reverse_tuning_teaches_a_local_llm_and_the_next_loop_uses_it(tiny_model_dir: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    adapters = _count_adapter_loads(monkeypatch)
    run, loops = _tuning_run(tiny_model_dir, tmp_path, monkeypatch, kept=True)
    assert (tmp_path / "loop_0" / "tuned" / "adapter_model.safetensors").is_file()
    assert len((tmp_path / "loop_0" / "tune.jsonl").read_text().splitlines()) == 8
    assert len(loops) == 2  # loop 1 annotated with the tuned tiny model (a plain LLMAnnotator)
    assert not np.allclose(loops[1].annotations, loops[0].annotations)
    from verticals.serval.evaluate import evaluate

    results = evaluate(run, loops)
    assert results["loops"][0]["tuned_llm"] is not None and results["loops"][0]["tune_examples"] == 8
    assert results["loops"][0]["tuning_check"]["kept"]
    # each tuned LLM was loaded once, though it labelled the check rows and then the next loop (or the test rows)
    loaded = [a for a in adapters if a is not None]
    assert loaded[0] == tmp_path / "loop_0" / "tuned" and loaded == sorted(tmp_path.glob("loop_*/tuned"))


def test_tuning_that_drew_the_llm_away_from_the_small_model_is_set_aside(tiny_model_dir: Path, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from verticals.serval.evaluate import evaluate
    from verticals.serval.report import table_rows

    adapters = _count_adapter_loads(monkeypatch)
    run, loops = _tuning_run(tiny_model_dir, tmp_path, monkeypatch, kept=False)
    assert len(loops) == 1 and "set aside" in loops[0].notes[-1]  # a second loop would annotate with it
    assert "--drop-rate 0" in loops[0].notes[-1]  # tuned with DropBP 0.5: the note says what to try
    results = evaluate(run, loops)
    assert results["table"]["tuned_llm"] is not None and not results["tuned_llm_kept"]
    assert table_rows(results)[2][0] == "reverse-tuned LLM (set aside)"
    assert [a for a in adapters if a is not None] == [tmp_path / "loop_0" / "tuned"]  # check rows, then test rows

    # a verdict written by the older rule (no `se`) is judged again on resume, not trusted
    verdict = tmp_path / "loop_0" / "tuning_check.json"
    verdict.write_text(json.dumps({k: v for k, v in json.loads(verdict.read_text()).items() if k != "se"}))
    _, loops = _tuning_run(tiny_model_dir, tmp_path, monkeypatch, kept=True)
    assert len(loops) == 2 and "se" in json.loads(verdict.read_text())


def test_judge_tuning_sets_aside_only_an_llm_that_moved_measurably_away() -> None:
    rng = np.random.default_rng(0)
    small = rng.random(80)
    before = small + rng.normal(0, 0.3, 80)  # the teacher: close to its student already
    closer, farther = small + rng.normal(0, 0.1, 80), rng.random(80)
    kept = judge_tuning(small, before, closer)
    assert kept.kept and kept.after > kept.before
    dropped = judge_tuning(small, before, farther)
    assert not dropped.kept and dropped.before - dropped.after > 1.645 * dropped.se and "set aside" in dropped.reason
    slightly = judge_tuning(small, before, before + np.random.default_rng(0).normal(0, 0.1, 80))
    assert slightly.after < slightly.before and slightly.kept  # a fall within the noise of 80 rows is no evidence
    assert 0 < slightly.se < 0.1
    falls = [judge_tuning(small, before, before + np.random.default_rng(k).normal(0, 0.2, 80)) for k in range(12)]
    z = np.array([(t.before - t.after) / t.se for t in falls])
    assert ((z > 1) & (z < 1.645)).any() and ((z > 1.645) & (z < 3)).any()  # the bar sits at 1.645, not 1 or 3
    assert [t.kept for t in falls] == list(z <= 1.645)
    assert judge_tuning(small, before, before).kept  # no change is no harm
    assert judge_tuning(small, before, farther, seed=3) != dropped  # the bootstrap draws from `seed`


class _Constant:
    """A model whose P(Yes) is the same for every row, as the 135M model's was on a table it knew nothing of."""

    fingerprint = "constant"

    def choice_probs(self, chats, choices, **kwargs):  # type: ignore[no-untyped-def]
        return np.tile([0.16, 0.84], (len(chats), 1))


def test_the_teacher_check_reads_spread_and_stability_without_labels() -> None:
    from verticals.serval.quality import check_teacher

    rng = np.random.default_rng(0)
    good = rng.uniform(0.1, 0.9, 300)
    asked = np.arange(100)
    steady = check_teacher(good, good[asked] + rng.normal(0, 0.02, 100), asked)
    assert steady.ok and steady.stability > 0.9 and steady.rows == 100
    flat = check_teacher(np.linspace(0.151, 0.169, 300), None, asked)  # the biopsy run's span: p5-p95 is 0.0162
    assert not flat.ok and "spans only 0.016 " in flat.reason and flat.stability is None
    shaky = check_teacher(good, rng.uniform(0.1, 0.9, 100), asked)  # another wording, another ranking
    assert not shaky.ok and "changes when the records are worded differently" in shaky.reason


def test_a_teacher_that_says_nothing_stops_the_run_unless_forced(heart, tmp_path: Path) -> None:
    few = heart.subset(np.arange(150))
    constant = LLMAnnotator(_Constant(), progress=False)
    with pytest.raises(ServalError, match=r"the LLM says little about this table: its P\(positive\) spans only "
                                          r"0.000 .* Continue anyway with --force"):
        SersalRun(few, constant, tmp_path / "stop", ServalConfig(**FAST), llm_spec="constant").run()
    assert not (tmp_path / "stop" / "loop_0" / "small_probs.npy").exists()  # stopped before teaching
    assert json.loads((tmp_path / "stop" / "loop_0" / "teacher.json").read_text())["ok"] is False
    results = sersal(few, "simulated:auc=0.75", tmp_path / "simulated", ServalConfig(**FAST), progress=False)
    assert results["loops"][0]["teacher"]["ok"] and results["loops"][0]["teacher"]["stability"] is None
    run = SersalRun(few, constant, tmp_path / "forced", ServalConfig(**FAST), llm_spec="constant", force=True)
    loops = run.run()
    assert loops[0].teacher is not None and not loops[0].teacher.ok
    from verticals.serval.evaluate import evaluate
    from verticals.serval.report import write_report

    results = evaluate(run, loops)
    page = write_report(tmp_path / "forced", results).read_text()
    assert page.index("The LLM said little about this table") < page.index("<h2>")  # the report's first words
    one_bin = "Every one of the 30 test rows got an LLM probability between 0.160 and 0.160"
    assert one_bin in page and "no calibration curve can be drawn" in page


def test_hosted_tuning_instructions_name_the_served_model() -> None:
    from verticals.serval.run import _served_name

    class Served:
        model = "gpt-4o-mini-2024-07-18"

    assert _served_name(Served()) == "gpt-4o-mini-2024-07-18" and _served_name(object()) == "<model>"


def test_scores_carry_bootstrap_intervals_and_the_verdict_says_what_the_rows_can_tell() -> None:
    from verticals.serval.evaluate import scores
    from verticals.serval.report import verdict

    rng = np.random.default_rng(0)
    gold = rng.integers(0, 2, 60)
    weak, strong = gold * 0.1 + rng.uniform(0, 1, 60), gold * 0.9 + rng.uniform(0, 1, 60)
    small, llm = scores(gold, strong), scores(gold, weak)
    for s in (small, llm):
        assert s["auc_ci"][0] < s["auc"] < s["auc_ci"][1]
        assert s["accuracy_ci"][0] <= s["accuracy"] <= s["accuracy_ci"][1]
    assert small["auc_ci"][1] - small["auc_ci"][0] > 0.05  # 60 rows leave a wide interval
    results = {"table": {"llm_zero_shot": llm, "small_model": small}, "split": {"test": 60},
               "loops": [{"teacher": {"ok": True}}]}
    assert verdict(results).startswith(f"the small model beat its teacher (AUC {small['auc']:.3f} against")
    close = scores(gold, weak + rng.normal(0, 0.05, 60))
    results["table"] = {"llm_zero_shot": llm, "small_model": close}
    said = verdict(results)
    assert "cannot tell them apart" in said or "did not beat its teacher" in said
    results["table"] = {"llm_zero_shot": small, "small_model": llm}
    assert verdict(results).startswith("the small model did not beat its teacher")
    results["loops"] = [{"teacher": {"ok": False}}]
    assert verdict(results).startswith("The LLM says little about this table (the teacher check failed); the small")
    results["table"] = {"llm_zero_shot": None, "small_model": None}
    assert "no gold labels" in verdict(results)


def test_the_report_counts_imputed_values_and_draws_roc_curves_for_every_model(tmp_path: Path) -> None:
    from verticals.serval import load_dataset

    pima = load_dataset("pima_diabetes")
    few = pima.subset(np.arange(200))
    gaps = {c: int(n) for c, n in few.frame.isna().sum().items() if n}
    assert gaps["Insulin"] > 50  # the file writes 0 for "not measured"; the metadata reads it as missing
    results = sersal(few, "simulated:auc=0.75", tmp_path / "run", ServalConfig(**FAST), progress=False)
    assert results["imputed"] == gaps
    page = (tmp_path / "run" / "report.html").read_text()
    assert f"Insulin {gaps['Insulin']}" in page and 'alt="ROC curves of each model on the test rows"' in page
