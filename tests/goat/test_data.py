"""Loading meme sets as users unpack them: every field and file variant of the release, and every
kind of broken record named, counted and skipped (or stopped at, with --strict)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from verticals.goat.config import GoatError
from verticals.goat.data import load_split, split_file
from verticals.goat.tasks import paper_tasks

TASKS = paper_tasks()


@pytest.mark.parametrize("task", list(TASKS))
def test_every_layout_of_the_fixture_loads(fixture_set: Path, task: str) -> None:
    memes, report = load_split(fixture_set, TASKS[task], "test")
    assert len(memes) == 10 and report.kept == 10 and not report.skipped
    assert all(m.image is not None and m.image.is_file() and m.text for m in memes)
    assert {m.label for m in memes} <= {0, 1}
    assert len({m.id for m in memes}) == 10
    if task == "offensiveness":  # org_sent and no id: the id is the image's name
        assert memes[0].id == Path(memes[0].image).stem  # type: ignore[arg-type]
    if task == "misogyny":
        assert all(isinstance(m.extra["sub_label"], list) for m in memes)
    if task == "harmfulness":
        assert {m.extra["subtask"] for m in memes} == {"harmc", "harmp"}


def rewrite(memes: Path, task: str, change) -> Path:  # type: ignore[no-untyped-def]
    """Apply `change(records)` to the task's test.jsonl (hatefulness and sarcasm are JSONL)."""
    file = memes / task / "test.jsonl"
    records = [json.loads(line) for line in file.read_text().splitlines()]
    lines = change(records)
    file.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return file


@pytest.mark.parametrize(("damage", "kind"), [
    (lambda r: {**r, "img": "img/nowhere.png"}, "missing_image"),
    (lambda r: {k: v for k, v in r.items() if k != "label"}, "no_label"),
    (lambda r: {**r, "label": 2}, "bad_label"),
    (lambda r: {"caption": r["text"], "img": r["img"], "label": 1}, "unknown_layout"),
    (lambda r: "{this is not json", "bad_json"),
    (lambda r: [1, 2], "unknown_layout"),
])
def test_a_broken_record_is_named_counted_and_skipped(memes: Path, damage, kind: str) -> None:  # type: ignore[no-untyped-def]
    file = rewrite(memes, "hatefulness", lambda records: [damage(records[0]), *records[1:]])
    kept, report = load_split(memes, TASKS["hatefulness"], "test")
    assert len(kept) == 9 and report.skipped == {kind: 1}
    assert report.examples[0].startswith(f"{file}:1: ")
    with pytest.raises(GoatError, match=rf"{file.name}:1: .*without --strict"):
        load_split(memes, TASKS["hatefulness"], "test", strict=True)


def test_a_corrupt_image_is_skipped_and_a_duplicate_id_too(memes: Path) -> None:
    rows = [json.loads(line) for line in (memes / "sarcasm" / "test.jsonl").read_text().splitlines()]
    (memes / "sarcasm" / rows[0]["image"]).write_bytes(b"\x89PNG not really")
    rewrite(memes, "sarcasm", lambda records: [*records, records[1]])
    kept, report = load_split(memes, TASKS["sarcasm"], "test")
    assert len(kept) == 9 and report.skipped == {"corrupt_image": 1, "duplicate_id": 1}


def test_text_only_models_need_no_images_and_image_models_are_told_where_they_are_missing(memes: Path) -> None:
    for image in (memes / "hatefulness" / "img").iterdir():
        image.unlink()
    kept, report = load_split(memes, TASKS["hatefulness"], "test", images=False)
    assert len(kept) == 10 and all(m.image is None for m in kept) and not report.skipped
    with pytest.raises(GoatError, match="hatefulness release ships text only.*text\\+bundled"):
        load_split(memes, TASKS["hatefulness"], "test")


def test_a_file_most_of_whose_records_are_unusable_stops(memes: Path) -> None:
    rewrite(memes, "hatefulness", lambda records: [{**r, "label": "maybe"} if i < 6 else r
                                                   for i, r in enumerate(records)])
    with pytest.raises(GoatError, match="6 of 10 records .* cannot be used \\(6 bad label\\)"):
        load_split(memes, TASKS["hatefulness"], "test")


def test_an_image_path_never_leaves_the_task_folder(memes: Path) -> None:
    outside = memes / "secret.png"
    outside.write_bytes((memes / "hatefulness" / "img").iterdir().__next__().read_bytes())
    rewrite(memes, "hatefulness", lambda records: [{**records[0], "img": "../secret.png"}, *records[1:]])
    _, report = load_split(memes, TASKS["hatefulness"], "test")
    assert report.skipped == {"missing_image": 1}


def test_the_split_file_is_found_as_the_release_names_it(tmp_path: Path) -> None:
    folder = tmp_path / "misogyny"
    folder.mkdir()
    (folder / "misogyny.jsonl").write_text("")
    assert split_file(folder, "test").name == "misogyny.jsonl"  # the release: one file, named after the task
    (folder / "misogyny_train.jsonl").write_text("")
    assert split_file(folder, "test").name == "misogyny.jsonl"
    assert split_file(folder, "train").name == "misogyny_train.jsonl"
    (folder / "other.json").write_text("[]")
    with pytest.raises(GoatError, match="cannot tell which file .* holds the test split"):
        split_file(folder, "test")


def test_a_whole_json_file_that_is_not_json_is_one_error(memes: Path) -> None:
    (memes / "misogyny" / "test.json").write_text("[{")
    with pytest.raises(GoatError, match="test.json is not valid JSON"):
        load_split(memes, TASKS["misogyny"], "test")
    (memes / "misogyny" / "test.json").write_text("[]")
    with pytest.raises(GoatError, match="holds no records"):
        load_split(memes, TASKS["misogyny"], "test")


def test_a_truncated_jpeg_is_caught_at_loading(memes: Path) -> None:
    from PIL import Image

    rows = [json.loads(line) for line in (memes / "sarcasm" / "test.jsonl").read_text().splitlines()]
    png = memes / "sarcasm" / rows[0]["image"]
    jpeg = png.with_suffix(".jpg")
    Image.open(png).convert("RGB").save(jpeg, quality=90)
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size // 2])  # half a file: verify() alone passes it
    rewrite(memes, "sarcasm", lambda records: [{**records[0], "image": f"img/{jpeg.name}"}, *records[1:]])
    _, report = load_split(memes, TASKS["sarcasm"], "test")
    assert report.skipped == {"corrupt_image": 1}


def test_records_of_a_json_list_are_counted_from_one(memes: Path) -> None:
    file = memes / "misogyny" / "test.json"
    records = json.loads(file.read_text())
    records[0]["label"] = "unsure"
    file.write_text(json.dumps(records))
    _, report = load_split(memes, TASKS["misogyny"], "test")
    assert report.examples == [f"{file}:1: label must be 0 or 1, got 'unsure'"]
