"""A small fixture meme set, written once per session (its images are drawn, which takes a second)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from verticals.goat.fixture import write_fixture


@pytest.fixture(scope="session")
def fixture_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixture(tmp_path_factory.mktemp("goat") / "memes", train=12, test=10, seed=3)


@pytest.fixture
def memes(fixture_set: Path, tmp_path: Path) -> Path:
    """A copy of the fixture a test may damage."""
    return Path(shutil.copytree(fixture_set, tmp_path / "memes"))
