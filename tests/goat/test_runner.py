"""`evaluate` end to end with a scripted model: outputs, resume after a kill, refusals before work."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from verticals.goat import runner
from verticals.goat.config import GoatError
from verticals.goat.models import ChatModel
from verticals.goat.runner import EvalSettings, evaluate
from verticals.llm.base import GenerationParams, LanguageModel
from verticals.llm.cache import ResponseCache
from verticals.llm.messages import Message

CAPTIONS = tomllib.loads(resources.files("verticals.goat").joinpath("fixture_captions.toml").read_text())
ABUSIVE = {c for task in CAPTIONS.values() for c in task["abusive"]}


class Killed(Exception):
    """Stands for kill -9 in the middle of a run."""


class Scripted(LanguageModel):
    """Says Yes exactly to captions that are abusive as text; can die after a number of answers."""

    def __init__(self, *, die_after: int | None = None, reply: str | None = None,
                 cache: ResponseCache | None = None) -> None:
        super().__init__(cache=cache)
        self.calls, self.die_after, self.reply = 0, die_after, reply

    @property
    def fingerprint(self) -> str:
        return "scripted-v1"

    def _caption(self, messages: list[Message]) -> str:
        text = "".join(p["text"] for p in messages[-1]["content"] if p["type"] == "text")
        return text.split("with the text '", 1)[1].split("' accompanied by", 1)[0]  # captions hold apostrophes

    def _chat(self, messages: list[Message], params: GenerationParams) -> str:
        self.calls += 1
        if self.die_after is not None and self.calls > self.die_after:
            raise Killed
        if self.reply is not None:
            return self.reply
        return "Yes, it is." if self._caption(messages) in ABUSIVE else "No."

    def _stream(self, messages: list[Message], params: GenerationParams) -> Iterator[str]:
        yield self._chat(messages, params)

    def _choice_logprobs(self, prompts: list[list[Message]], choices: tuple[str, ...]) -> np.ndarray:
        return np.log(np.array([[0.8, 0.2] if self._caption(p) in ABUSIVE else [0.3, 0.7] for p in prompts]))


@pytest.fixture
def use_model(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Make `evaluate` use a given scripted model (as a text-only model: no OCR)."""

    def install(lm: Scripted) -> Scripted:
        monkeypatch.setattr(runner, "open_meme_model",
                            lambda spec, cache, adapter, **_: ChatModel(spec, lm, "text", cache))
        return lm

    return install


def settings(fixture_set: Path, out: Path, **kwargs: object) -> EvalSettings:
    return EvalSettings(fixture_set, "text+scripted", out, **kwargs)  # type: ignore[arg-type]


def without_out(results: dict) -> dict:
    return {**results, "settings": {k: v for k, v in results["settings"].items() if k != "out"}}


def test_outputs_a_person_and_a_machine_can_read(fixture_set: Path, tmp_path: Path, use_model) -> None:  # type: ignore[no-untyped-def]
    use_model(Scripted())
    results = evaluate(settings(fixture_set, tmp_path / "run", probabilities=True))
    assert results["fixture"] and "not GOAT-Bench" in results["benchmark"]
    assert list(results["tasks"]) == ["hatefulness", "misogyny", "offensiveness", "sarcasm", "harmfulness"]
    for name, task in results["tasks"].items():
        rows = [json.loads(line) for line in (tmp_path / "run" / f"samples_{name}.jsonl").read_text().splitlines()]
        assert len(rows) == task["n"] == 10
        # the scripted model reads captions only: right on text cues, so abusive recall is that of text-cued memes
        assert all(r["prediction"] == r["gold"] for r in rows if r["extra_cue"] == "text")
        assert task["auroc"] is not None and task["unknown_rate"] == 0
        assert set(task["slices"]["cue"]) <= {"text", "image", "both"}
    assert results["overall"]["macro_f1"] == pytest.approx(np.mean([t["macro_f1"] for t in results["tasks"].values()]))
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved == json.loads(json.dumps(results))
    report = (tmp_path / "run" / "report.md").read_text()
    assert "**Fixture**" in report and "| misogyny | 10 |" in report
    assert (tmp_path / "run" / "macro_f1.png").stat().st_size > 1000


def test_a_killed_run_resumes_without_asking_twice_and_ends_the_same(fixture_set: Path, tmp_path: Path,
                                                                   use_model) -> None:  # type: ignore[no-untyped-def]
    use_model(Scripted(cache=ResponseCache(tmp_path / "a.sqlite")))
    whole = evaluate(settings(fixture_set, tmp_path / "whole"))
    cache = ResponseCache(tmp_path / "b.sqlite")
    use_model(Scripted(die_after=25, cache=cache))  # dies in the third task
    with pytest.raises(Killed):
        evaluate(settings(fixture_set, tmp_path / "resumed"))
    assert not (tmp_path / "resumed" / "results.json").exists()
    again = use_model(Scripted(cache=cache))
    resumed = evaluate(settings(fixture_set, tmp_path / "resumed"))
    # the first two tasks came from the cache; of the other three, each distinct question is asked once
    from verticals.goat.data import load_split
    from verticals.goat.tasks import paper_tasks

    later = [load_split(fixture_set, paper_tasks()[t], "test", images=False)[0]
             for t in ("offensiveness", "sarcasm", "harmfulness")]
    assert 0 < again.calls <= sum(len({m.text for m in memes}) for memes in later) < 30
    assert without_out(resumed) == without_out(whole)


def test_a_run_folder_is_never_mixed_with_other_settings(fixture_set: Path, tmp_path: Path, use_model) -> None:  # type: ignore[no-untyped-def]
    use_model(Scripted())
    evaluate(settings(fixture_set, tmp_path / "run", tasks="misogyny"))
    with pytest.raises(GoatError, match="other settings \\(prompt, tasks changed\\)"):
        evaluate(settings(fixture_set, tmp_path / "run", tasks="sarcasm", prompt="cot"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(GoatError, match="not a GOAT run folder"):
        evaluate(settings(fixture_set, tmp_path / "mine"))


def test_everything_is_checked_before_the_model_loads(fixture_set: Path, memes: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the settings were checked")

    monkeypatch.setattr(runner, "open_meme_model", never)
    (memes / "sarcasm" / "test.jsonl").write_text("{broken\n" * 3)
    for bad, match in [(settings(memes, tmp_path / "a"), "3 of 3 records"),
                       (settings(fixture_set, tmp_path / "b", prompt="best"), "unknown prompt style"),
                       (settings(fixture_set, tmp_path / "c", tasks="memes"), "unknown task"),
                       (settings(tmp_path / "nothing", tmp_path / "d"), "no meme set at"),
                       (settings(tmp_path, tmp_path / "e"), "has no task folder")]:
        with pytest.raises(GoatError, match=match):
            evaluate(bad)


def test_answers_that_cannot_be_read_stop_the_run_and_are_kept(fixture_set: Path, tmp_path: Path, use_model) -> None:  # type: ignore[no-untyped-def]
    use_model(Scripted(reply="This is a picture of a meme."))
    with pytest.raises(GoatError, match="10 of 10 answers could not be read as Yes or No \\(10 unreadable\\)"):
        evaluate(settings(fixture_set, tmp_path / "run", tasks="misogyny"))
    rows = (tmp_path / "run" / "samples_misogyny.jsonl").read_text().splitlines()
    assert len(rows) == 10 and json.loads(rows[0])["answer"] == "This is a picture of a meme."
    # counted and scored as wrong when the user says so
    results = evaluate(settings(fixture_set, tmp_path / "run2", tasks="misogyny", max_unknown=1.0))
    assert results["tasks"]["misogyny"]["unknown_rate"] == 1.0 and results["tasks"]["misogyny"]["accuracy"] == 0


class Vague(Scripted):
    """Answers abusive captions in words the rules cannot read, the others with a plain No."""

    def _chat(self, messages: list[Message], params: GenerationParams) -> str:
        return "It is mean-spirited towards them." if self._caption(messages) in ABUSIVE else "No."


class JudgeLM(Scripted):
    """A judge that reads "mean-spirited" as Yes and anything else as Unknown; counts what it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def _chat(self, messages: list[Message], params: GenerationParams) -> str:
        self.seen.append(messages[-1]["content"])
        return "Yes" if "Answer given: It is mean-spirited" in messages[-1]["content"] else "Unknown"


def test_a_judge_rereads_only_the_unknown_answers_and_its_verdicts_are_marked(
        fixture_set: Path, tmp_path: Path, use_model, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from verticals.goat.judge import Judge

    use_model(Vague())
    judge_lm = JudgeLM()
    monkeypatch.setattr(runner, "open_judge", lambda spec, **_: Judge(spec, judge_lm, "Q: {question}\n"
                                                                      "Answer given: {answer}", 8))
    results = evaluate(settings(fixture_set, tmp_path / "run", judge="bundled", max_unknown=1.0))
    rows = [json.loads(line) for task in results["tasks"]
            for line in (tmp_path / "run" / f"samples_{task}.jsonl").read_text().splitlines()]
    abusive_text = [r for r in rows if r["prompt"].split("with the text '", 1)[1].split("' accompanied", 1)[0]
                    in ABUSIVE]
    assert abusive_text and len(judge_lm.seen) == len(abusive_text)  # the plain "No." answers were never sent
    assert all(r["rule"] == "judge" and r["judge"] == "Yes" and r["prediction"] == 1 for r in abusive_text)
    assert all("judge" not in r and r["rule"] == "first_word" for r in rows if r not in abusive_text)
    assert sum(t["judged"] for t in results["tasks"].values()) == len(abusive_text)
    assert results["overall"]["unknown"] == 0
    assert results["judge"]["spec"] == "bundled"
    # without the judge the same answers are unknown, and the refusal says a judge may read them
    with pytest.raises(GoatError, match="a --judge model may read them"):
        evaluate(settings(fixture_set, tmp_path / "run2", max_unknown=0.0))


def test_a_judge_that_cannot_settle_an_answer_leaves_it_unknown(
        fixture_set: Path, tmp_path: Path, use_model, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from verticals.goat.judge import Judge

    use_model(Scripted(reply="A picture of a meme."))
    monkeypatch.setattr(runner, "open_judge", lambda spec, **_: Judge(spec, JudgeLM(), "{question} {answer}", 8))
    results = evaluate(settings(fixture_set, tmp_path / "run", tasks="sarcasm", judge="bundled", max_unknown=1.0))
    rows = [json.loads(line) for line in (tmp_path / "run" / "samples_sarcasm.jsonl").read_text().splitlines()]
    assert all(r["judge"] == "Unknown" and r["prediction"] is None and r["rule"] == "unreadable" for r in rows)
    assert results["tasks"]["sarcasm"]["unknown_rate"] == 1.0


@pytest.mark.parametrize("reply", ["", "Yes/No"])
def test_an_answer_that_says_nothing_is_not_sent_to_the_judge(fixture_set: Path, tmp_path: Path, use_model,
                                                              monkeypatch: pytest.MonkeyPatch, reply: str) -> None:  # type: ignore[no-untyped-def]
    from verticals.goat.judge import Judge

    use_model(Scripted(reply=reply))
    judge_lm = JudgeLM()
    monkeypatch.setattr(runner, "open_judge", lambda spec, **_: Judge(spec, judge_lm, "{question} {answer}", 8))
    results = evaluate(settings(fixture_set, tmp_path / "run", tasks="sarcasm", judge="bundled", max_unknown=1.0))
    assert judge_lm.seen == [] and results["tasks"]["sarcasm"]["unknown_rate"] == 1.0


def test_a_run_from_before_a_setting_existed_resumes_under_its_default(fixture_set: Path, tmp_path: Path,
                                                                      use_model) -> None:  # type: ignore[no-untyped-def]
    use_model(Scripted())
    first = evaluate(settings(fixture_set, tmp_path / "run", tasks="sarcasm"))
    saved = json.loads((tmp_path / "run" / "settings.json").read_text())
    del saved["judge"]
    (tmp_path / "run" / "settings.json").write_text(json.dumps(saved))
    assert evaluate(settings(fixture_set, tmp_path / "run", tasks="sarcasm"))["tasks"] == first["tasks"]
    with pytest.raises(GoatError, match="judge changed"):
        evaluate(settings(fixture_set, tmp_path / "run", tasks="sarcasm", judge="bundled"))


def test_k_shot_prompts_carry_examples_from_the_train_split(fixture_set: Path, tmp_path: Path, use_model) -> None:  # type: ignore[no-untyped-def]
    use_model(Scripted())
    evaluate(settings(fixture_set, tmp_path / "run", tasks="sarcasm", prompt="k-shot"))
    rows = [json.loads(line) for line in (tmp_path / "run" / "samples_sarcasm.jsonl").read_text().splitlines()]
    assert all(len(r["shots"]) == 4 and all("-train-" in s for s in r["shots"]) for r in rows)
    assert len({tuple(r["shots"]) for r in rows}) > 1  # chosen per meme, by seed


def test_replayed_answers_are_scored_and_missing_ones_counted(fixture_set: Path, tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (fixture_set / "sarcasm" / "test.jsonl").read_text().splitlines()]
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"id": r["id"], "answer": "Yes" if r["label"] else "No"}) + "\n"
                               for r in rows[:8]))
    results = evaluate(EvalSettings(fixture_set, f"replay:{answers}", tmp_path / "run", tasks="sarcasm"))
    task = results["tasks"]["sarcasm"]
    assert task["answers"] == {"first_word": 8, "missing": 2} and task["accuracy"] == 0.8


def test_a_mistyped_model_leaves_the_run_folder_untouched(fixture_set: Path, tmp_path: Path) -> None:
    with pytest.raises(GoatError, match="replay file not found"):
        evaluate(EvalSettings(fixture_set, f"replay:{tmp_path / 'typo.jsonl'}", tmp_path / "run", tasks="sarcasm"))
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"prompt": "cot", "probabilities": True}, "first answer token"),
    ({"prompt": "k-shot", "split": "train"}, "k-shot prompt learns from the train split"),
    ({"max_unknown": 1.5}, "from 0 to 1"),
])
def test_settings_that_cannot_work_together_are_refused(fixture_set: Path, tmp_path: Path, kwargs: dict,
                                                         match: str) -> None:
    with pytest.raises(GoatError, match=match):
        evaluate(settings(fixture_set, tmp_path / "run", **kwargs))


def test_an_out_that_is_a_file_or_a_damaged_run_is_refused(fixture_set: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(GoatError, match="is a file"):
        evaluate(settings(fixture_set, tmp_path / "file"))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "settings.json").write_text("[1, 2]")
    with pytest.raises(GoatError, match="damaged"):
        evaluate(settings(fixture_set, tmp_path / "run"))


def test_all_tasks_leaves_out_a_task_without_images_and_says_so(memes: Path, tmp_path: Path, use_model) -> None:  # type: ignore[no-untyped-def]
    for image in (memes / "hatefulness" / "img").iterdir():
        image.unlink()
    use_model(Scripted())
    images = EvalSettings(memes, "ocr+scripted", tmp_path / "run")  # a model that needs the images
    results = evaluate(images)
    assert "hatefulness" not in results["tasks"] and len(results["tasks"]) == 4
    assert "release ships text only" in results["tasks_left_out"]["hatefulness"]
    assert "Tasks left out" in (tmp_path / "run" / "report.md").read_text()
    with pytest.raises(GoatError, match="no image of 'hatefulness'"):
        evaluate(EvalSettings(memes, "ocr+scripted", tmp_path / "run2", tasks="hatefulness"))


def test_compare_and_leaderboard_read_the_runs(fixture_set: Path, tmp_path: Path) -> None:
    from verticals.goat.compare import compare_runs, leaderboard

    rows = [json.loads(line) for line in (fixture_set / "sarcasm" / "test.jsonl").read_text().splitlines()]
    for name, right in (("good", 9), ("poor", 5)):
        answers = tmp_path / f"{name}.jsonl"
        answers.write_text("".join(json.dumps({"id": r["id"], "answer": ("Yes" if r["label"] else "No") if i < right
                                               else ("No" if r["label"] else "Yes")}) + "\n"
                                   for i, r in enumerate(rows)))
        evaluate(EvalSettings(fixture_set, f"replay:{answers}", tmp_path / "runs" / name, tasks="sarcasm"))
    result = compare_runs(tmp_path / "runs" / "poor", tmp_path / "runs" / "good")
    row = result["tasks"]["sarcasm"]
    assert row["n"] == 10 and row["delta_macro_f1"] > 0 and result["fixture"]
    board = leaderboard(tmp_path / "runs").splitlines()
    assert board[0].startswith("| run | model | prompt | data | sarcasm |")
    assert board[2].startswith("| good |") and board[3].startswith("| poor |")  # best first
    with pytest.raises(GoatError, match="no results.json"):
        compare_runs(tmp_path, tmp_path / "runs" / "good")
