"""The real models on the fixture (slow): the offline OCR baseline, and a multimodal-style request
with images through `verticals llm serve` on 127.0.0.1, as a user with a server would run it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.llm.server_util import running_server
from verticals.goat.config import GoatError
from verticals.goat.models import open_meme_model
from verticals.goat.runner import EvalSettings, evaluate
from verticals.llm.cache import ResponseCache

pytestmark = pytest.mark.slow


def test_ocr_plus_bundled_reads_the_captions_and_scores(fixture_set: Path, tmp_path: Path) -> None:
    results = evaluate(EvalSettings(fixture_set, "ocr+bundled", tmp_path / "run", tasks="misogyny", limit=6,
                                    probabilities=True), cache=ResponseCache(tmp_path / "cache.sqlite"))
    task = results["tasks"]["misogyny"]
    assert task["n"] == 6 and 0 <= task["auroc"] <= 1
    rows = [json.loads(line) for line in (tmp_path / "run" / "samples_misogyny.jsonl").read_text().splitlines()]
    for row in rows:  # the image reached the text model as the caption OCR read in it
        assert '[an image with the text "' in row["prompt"]
        assert row["answer"] and 0 < row["probability"] < 1


def test_images_travel_to_an_openai_compatible_server(bundled_model, fixture_set: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import openai

    from verticals.goat.data import load_split
    from verticals.goat.prompts import get_style, messages_for
    from verticals.goat.tasks import paper_tasks

    with running_server(bundled_model, "smollm2") as url:
        results = evaluate(EvalSettings(fixture_set, f"openai:{url}#smollm2", tmp_path / "run", tasks="sarcasm",
                                        limit=4), cache=ResponseCache(tmp_path / "cache.sqlite"))
        # the harness's request, sent again with the SDK: the server read the image and says so
        meme = load_split(fixture_set, paper_tasks()["sarcasm"], "test")[0][0]
        reply = openai.OpenAI(base_url=url, api_key="unused", max_retries=0).chat.completions.create(
            model="smollm2", max_tokens=4, temperature=0,
            messages=messages_for(get_style("zero-shot"), paper_tasks()["sarcasm"], meme))  # type: ignore[arg-type]
    assert reply.model == "smollm2+ocr"
    assert results["tasks"]["sarcasm"]["n"] == 4 and results["model"]["fingerprint"].startswith("images:openai:")
    rows = [json.loads(line) for line in (tmp_path / "run" / "samples_sarcasm.jsonl").read_text().splitlines()]
    assert all(row["answer"] for row in rows)


def test_a_local_text_model_must_say_how_it_sees_images() -> None:
    with pytest.raises(GoatError, match="ocr\\+MODEL or text\\+MODEL"):
        open_meme_model("bundled", cache=None)


def test_fusion_learns_each_task_from_its_train_split(fixture_set: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite")
    results = evaluate(EvalSettings(fixture_set, "fusion", tmp_path / "run", tasks="harmfulness,sarcasm",
                                    probabilities=True), cache=cache)
    assert results["model"]["fingerprint"].startswith("fusion:both:")
    for task in results["tasks"].values():
        assert task["n"] == 10 and task["unknown_rate"] == 0 and task["auroc"] is not None
    rows = [json.loads(line) for line in (tmp_path / "run" / "samples_sarcasm.jsonl").read_text().splitlines()]
    assert all((r["probability"] >= 0.5) == (r["prediction"] == 1) for r in rows)
    with pytest.raises(GoatError, match="learns from the train split"):
        evaluate(EvalSettings(fixture_set, "fusion:text", tmp_path / "run2", split="train"))
    # a rerun computes no feature: every row comes from the cache, and the scores are the same
    from verticals.encoders import image, text

    def fail(*_: object, **__: object) -> None:
        raise AssertionError("a feature was computed again")

    monkeypatch.setattr(image, "image_features", fail)
    monkeypatch.setattr(text, "embed_texts", fail)
    again = evaluate(EvalSettings(fixture_set, "fusion", tmp_path / "run3", tasks="harmfulness,sarcasm",
                                  probabilities=True), cache=cache)
    assert again["tasks"] == results["tasks"]
