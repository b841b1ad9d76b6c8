"""`align`: the train split asked as `ocr+` asks it, answered from gold; refusals before any training."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from verticals.goat.align import AlignSettings, align
from verticals.goat.config import GoatError
from verticals.goat.runner import EvalSettings, evaluate
from verticals.llm.cache import ResponseCache


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[list[dict[str, Any]]]:
    """Stand-in for `verticals.finetune.finetune` that keeps the training conversations it is given."""
    from verticals.finetune import train

    seen: list[list[dict[str, Any]]] = []

    def fake(model: Any, data: list[dict[str, Any]], output_dir: Path, config: Any, *, resume: bool = False,
             progress: bool = True) -> Any:
        seen.append(data)
        return train.FinetuneResult(Path(output_dir), config.steps, 0.5, 1.0, None)

    monkeypatch.setattr(train, "finetune", fake)
    return seen


def _train_records(memes: Path, task: str = "sarcasm") -> list[dict[str, Any]]:
    return [json.loads(line) for line in (memes / task / "train.jsonl").read_text().splitlines() if line.strip()]


def test_each_train_meme_is_asked_with_its_ocr_text_and_answered_from_gold(
        memes: Path, tiny_model_dir: Path, tmp_path: Path, captured: list) -> None:  # type: ignore[type-arg]
    record = align(AlignSettings(memes, tmp_path / "adapter", tasks="sarcasm", base=str(tiny_model_dir)),
                   cache=ResponseCache(tmp_path / "cache.sqlite"))
    gold = Counter((r["text"], "Yes" if r["label"] else "No") for r in _train_records(memes))
    conversations = captured[0]
    assert len(conversations) == record["examples"] == gold.total() == 12
    asked_and_answered = Counter()
    for conversation in conversations:
        *asked, answer = conversation["messages"]
        question = asked[-1]["content"]
        assert question.startswith("Given the meme, with the text '") and "is this meme sarcastic?" in question
        assert answer["role"] == "assistant"
        caption = question.split("with the text '", 1)[1].split("' accompanied by", 1)[0]
        asked_and_answered[(caption, answer["content"])] += 1
        # the image's place holds what the OCR read, which is the drawn caption, give or take a character
        read = question.split("Answer: only Yes/No.", 1)[1].lower()
        assert sum(word in read for word in caption.lower().split()) >= len(caption.split()) - 1
    assert asked_and_answered == gold
    saved = json.loads((tmp_path / "adapter" / "goat_align.json").read_text())
    assert saved["split"] == "train" and saved["tasks"] == ["sarcasm"] and saved["final_loss"] == 0.5


def test_resume_continues_a_killed_run_and_refuses_training_memes_that_changed(
        memes: Path, tiny_model_dir: Path, tmp_path: Path, captured: list, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[type-arg]
    from verticals.finetune import train

    settings = AlignSettings(memes, tmp_path / "adapter", tasks="sarcasm", base=str(tiny_model_dir))
    cache = ResponseCache(tmp_path / "cache.sqlite")
    finish = train.finetune

    def killed(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "finetune", killed)
    with pytest.raises(KeyboardInterrupt):
        align(settings, cache=cache)
    assert "final_loss" not in json.loads((tmp_path / "adapter" / "goat_align.json").read_text())
    with pytest.raises(GoatError, match="not empty"):  # a new run there would mix with the killed one
        align(settings, cache=cache)
    monkeypatch.setattr(train, "finetune", finish)
    assert align(settings, cache=cache, resume=True)["final_loss"] == 0.5  # the same memes: it continues
    assert len(captured) == 1
    assert align(settings, cache=cache, resume=True)["final_loss"] == 0.5  # finished: nothing is trained again
    assert len(captured) == 1
    with pytest.raises(GoatError, match="other settings"):
        align(AlignSettings(memes, tmp_path / "adapter", tasks="sarcasm", base=str(tiny_model_dir), lr=0.5),
              cache=cache, resume=True)
    records = _train_records(memes)
    records[0]["label"] = 1 - records[0]["label"]
    (memes / "sarcasm" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(GoatError, match="conversations changed"):
        align(settings, cache=cache, resume=True)
    (tmp_path / "adapter" / "goat_align.json").write_text("[1, 2]")
    with pytest.raises(GoatError, match="damaged"):
        align(settings, cache=cache, resume=True)


def test_unusable_settings_are_refused_before_any_image_is_read(memes: Path, tmp_path: Path,
                                                               captured: list) -> None:  # type: ignore[type-arg]
    with pytest.raises(GoatError, match="not a server"):
        AlignSettings(memes, tmp_path / "a", base="http://127.0.0.1:9/v1")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(GoatError, match="is not empty"):
        align(AlignSettings(memes, tmp_path / "full"), cache=ResponseCache(tmp_path / "c.sqlite"))
    with pytest.raises(GoatError, match="nothing to resume"):
        align(AlignSettings(memes, tmp_path / "new"), cache=ResponseCache(tmp_path / "c.sqlite"), resume=True)
    with pytest.raises(GoatError, match="unknown task"):
        align(AlignSettings(memes, tmp_path / "new", tasks="sarcasm,nonsense"))
    assert not captured and not (tmp_path / "new").exists()


def test_all_tasks_leaves_out_a_task_without_its_folder_or_images(memes: Path, tiny_model_dir: Path, tmp_path: Path,
                                                                  captured: list, capsys) -> None:  # type: ignore[no-untyped-def, type-arg]
    import shutil

    shutil.rmtree(memes / "misogyny")
    shutil.rmtree(memes / "hatefulness" / "img")
    for task in ("offensiveness", "harmfulness"):
        shutil.rmtree(memes / task)
    record = align(AlignSettings(memes, tmp_path / "adapter", base=str(tiny_model_dir)),
                   cache=ResponseCache(tmp_path / "cache.sqlite"))
    assert record["tasks"] == ["sarcasm"] and record["examples"] == len(captured[0]) == 12
    assert "hatefulness: left out" in capsys.readouterr().err
    with pytest.raises(GoatError, match="hatefulness"):  # named explicitly, its images must be there
        align(AlignSettings(memes, tmp_path / "other", tasks="hatefulness", base=str(tiny_model_dir)),
              cache=ResponseCache(tmp_path / "cache.sqlite"))


@pytest.mark.slow
def test_an_aligned_adapter_is_evaluated_like_any_model_but_never_on_its_train_split(
        memes: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite")
    adapter = tmp_path / "adapter"
    align(AlignSettings(memes, adapter, tasks="sarcasm", base=str(tiny_model_dir), steps=2, batch_size=4),
          cache=cache)
    assert (adapter / "adapter_model.safetensors").is_file()
    model = f"ocr+{tiny_model_dir}"
    with pytest.raises(GoatError, match="learnt from the train split"):
        evaluate(EvalSettings(memes, model, tmp_path / "on-train", tasks="sarcasm", split="train", adapter=adapter),
                 cache=cache)
    with pytest.raises(GoatError, match="trained on other weights"):
        evaluate(EvalSettings(memes, "ocr+bundled", tmp_path / "other-base", tasks="sarcasm", adapter=adapter),
                 cache=cache)
    with pytest.raises(GoatError, match="learnt OCR text"):
        evaluate(EvalSettings(memes, f"text+{tiny_model_dir}", tmp_path / "text", tasks="sarcasm", adapter=adapter),
                 cache=cache)
    # the same weights named another way are the same base
    results = evaluate(EvalSettings(memes, f"ocr+{tiny_model_dir}/.", tmp_path / "run", tasks="sarcasm",
                                    adapter=adapter, max_unknown=1.0), cache=cache)
    assert results["tasks"]["sarcasm"]["n"] == 10
    assert results["settings"]["adapter"] == str(adapter)
