"""The synthetic fixture: reproducible, marked as a fixture, labels by its rules, captions OCR can read."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from verticals.goat.config import GoatError
from verticals.goat.data import load_split
from verticals.goat.fixture import RECIPES, cue_is_decidable, write_fixture
from verticals.goat.tasks import paper_tasks, read_set_info


def digest(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    content = b"".join(p.relative_to(folder).as_posix().encode() + p.read_bytes() for p in files)
    return hashlib.sha256(content).hexdigest()


def test_the_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    a = write_fixture(tmp_path / "a", train=3, test=2, seed=7)
    b = write_fixture(tmp_path / "b", train=3, test=2, seed=7)
    c = write_fixture(tmp_path / "c", train=3, test=2, seed=8)
    assert digest(a) == digest(b) != digest(c)


def test_it_says_it_is_a_fixture(fixture_set: Path) -> None:
    info = read_set_info(fixture_set)
    assert info.fixture and "synthetic" in info.name


@pytest.mark.parametrize("cue", ["text", "image", "both"])
def test_each_cue_is_decidable_the_way_it_says_and_only_that_way(cue: str) -> None:
    assert cue_is_decidable(cue)


def test_every_meme_is_made_by_a_recipe(fixture_set: Path) -> None:
    import tomllib
    from importlib import resources

    captions = tomllib.loads(resources.files("verticals.goat").joinpath("fixture_captions.toml").read_text())
    recipes = {(tone, picture, label, cue) for tone, picture, label, cue, _ in RECIPES}
    seen = set()
    for task in paper_tasks().values():
        for split in ("train", "test"):
            for meme in load_split(fixture_set, task, split)[0]:
                tone = next(t for t, texts in captions[task.name].items() if meme.text in texts)
                made = (tone, meme.extra["picture"], meme.label, meme.extra["cue"])
                assert made in recipes
                seen.add(made)
    assert len(seen) >= 6  # 110 memes draw (nearly) every recipe


def test_a_used_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "mine.txt").write_text("keep me")
    with pytest.raises(GoatError, match="not an empty folder"):
        write_fixture(tmp_path / "x")
    with pytest.raises(GoatError, match="at least one meme"):
        write_fixture(tmp_path / "y", train=0)


@pytest.mark.slow
def test_the_bundled_ocr_reads_the_captions(fixture_set: Path) -> None:
    from verticals.encoders import character_error_rate, read_text

    records = [json.loads(line) for line in (fixture_set / "sarcasm" / "test.jsonl").read_text().splitlines()]
    reads = [read_text((fixture_set / "sarcasm" / r["image"]).read_bytes()) for r in records]
    # the character error rate the benchmark reports on the whole fixture
    assert character_error_rate([r["text"] for r in records], reads) < 0.05
