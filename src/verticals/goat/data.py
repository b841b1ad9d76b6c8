"""Meme sets as users unpack them: a folder per task with images and a `.json` or `.jsonl` file.

The release's field names differ between tasks, as the official loader knows: text under `text`
or `org_sent`, the image under `img` or `image` (a path relative to the task folder), the id
under `id` (else the image's name without extension), the gold label under `label`. Other
fields (`sub_label`, `target`, `subtask`, ...) are kept for slicing. A record that cannot be used
is named with its file and line (or position in a JSON list), counted and skipped (`strict`
stops at the first); when most of a file cannot be used, loading stops: a result on what is left
would mislead.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from verticals.goat.config import GoatError
from verticals.goat.tasks import Task

TEXT_KEYS, IMAGE_KEYS = ("text", "org_sent"), ("img", "image")
_KNOWN = {*TEXT_KEYS, *IMAGE_KEYS, "id", "label"}
_OTHER_SPLITS = ("train", "dev", "val", "valid", "validation")
#: a file most of whose records cannot be used stops the run, whatever `strict` says
MAX_SKIPPED_SHARE = 0.5
IMAGE_FOLDERS = ("", "img", "images")


class MissingImagesError(GoatError):
    """None of a task's images is there (the hatefulness release ships none)."""


@dataclass(frozen=True)
class Meme:
    """One labelled meme; `image` is None for a text-only record."""

    id: str
    task: str
    text: str
    image: Path | None
    label: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadReport:
    """What loading one split found: the file, how many memes were kept, what was skipped and why."""

    file: str
    kept: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)  # the first few problems, "file:line: what"

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "kept": self.kept, "skipped": dict(self.skipped), "examples": self.examples}


def task_folder(data: Path, task: Task) -> Path:
    return data / task.name


def split_file(folder: Path, split: str) -> Path:
    """The annotation file of `split` in a task folder (`test.jsonl`, `misogyny_test.json`, or the only one).

    Raises:
        GoatError: no such file, or several that could be it.
    """
    files = sorted(p for p in folder.iterdir() if p.suffix in (".json", ".jsonl") and p.is_file())
    named = [p for p in files if p.stem == split or p.stem.endswith((f"_{split}", f"-{split}"))]
    if len(named) == 1:
        return named[0]
    if not named and split == "test":  # the release: one annotation file per task, named after it
        others = [p for p in files if not any(p.stem == s or p.stem.endswith((f"_{s}", f"-{s}"))
                                              for s in _OTHER_SPLITS)]
        if len(others) == 1:
            return others[0]
        named = others
    found = ", ".join(p.name for p in (named or files)) or "no .json or .jsonl file"
    raise GoatError(f"cannot tell which file in {folder} holds the {split} split (found: {found}); "
                    f"name it {split}.jsonl")


def load_split(data: Path, task: Task, split: str = "test", *, images: bool = True,
               strict: bool = False) -> tuple[list[Meme], LoadReport]:
    """The usable memes of one task's split, and what was skipped.

    Args:
        data: the meme set's folder (one sub-folder per task).
        task: which task.
        split: `test` or `train` (or any name with its own file).
        images: whether the model needs the images (then a missing or broken image skips the meme).
        strict: stop at the first problem instead of skipping.

    Raises:
        GoatError: no folder or file for the split, an unreadable file, a problem in strict mode,
            images needed but none there (hatefulness ships text only), or most records unusable.
    """
    folder = task_folder(data, task)
    if not folder.is_dir():
        raise GoatError(f"no folder {folder} for task {task.name!r}")
    file = split_file(folder, split)
    records = read_records(file)
    report = LoadReport(str(file))
    memes: list[Meme] = []
    seen: set[str] = set()
    for line, record in records:
        meme, problem = _meme(record, task, folder, images)
        if meme is not None and meme.id in seen:
            problem = ("duplicate_id", f"id {meme.id!r} appears again")
            meme = None
        if meme is None:
            kind, detail = problem  # type: ignore[misc]
            where = f"{file}:{line}: {detail}"
            if strict:
                raise GoatError(f"{where} (without --strict such records are skipped and counted)")
            report.skipped[kind] += 1
            if len(report.examples) < 5:
                report.examples.append(where)
            continue
        seen.add(meme.id)
        memes.append(meme)
    report.kept = len(memes)
    _check_enough(report, len(records), task, folder, images)
    return memes, report


def _check_enough(report: LoadReport, total: int, task: Task, folder: Path, images: bool) -> None:
    if total == 0:
        raise GoatError(f"{report.file} holds no records")
    if images and report.skipped["missing_image"] == total:
        where = ", ".join(str(folder / sub) for sub in IMAGE_FOLDERS)
        why = (": the hatefulness release ships text only; its images come from the Hateful Memes Challenge"
               if task.name == "hatefulness" else "")
        raise MissingImagesError(f"no image of {task.name!r} was found (looked in {where}){why}. Put the images "
                                 "there, leave the task out (--tasks with the others), or use a model that reads "
                                 "the text only (--model text+bundled)")
    skipped = sum(report.skipped.values())
    if skipped > MAX_SKIPPED_SHARE * total:
        counts = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in report.skipped.most_common())
        raise GoatError(f"{skipped} of {total} records in {report.file} cannot be used ({counts}); first: "
                        f"{report.examples[0]}")


def read_records(file: Path) -> list[tuple[int, Any]]:
    """(line, record) pairs of a `.jsonl` file, or (position from 1, record) of a `.json` list; a JSONL line
    that is not JSON becomes a `BadLine` record.

    Raises:
        GoatError: the file cannot be read, or a `.json` file is not a JSON list.
    """
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise GoatError(f"cannot read {file}: {err}") from err
    if file.suffix == ".jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append((number, json.loads(line)))
            except json.JSONDecodeError as err:
                records.append((number, BadLine(str(err))))
        return records
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise GoatError(f"{file} is not valid JSON: {err}") from err
    if isinstance(value, dict) and isinstance(value.get("data"), list):
        value = value["data"]
    if not isinstance(value, list):
        raise GoatError(f"{file} must hold a JSON list of records, got {type(value).__name__}")
    return list(enumerate(value, start=1))


@dataclass(frozen=True)
class BadLine:
    """A JSONL line that is not JSON."""

    error: str


def _meme(record: Any, task: Task, folder: Path, images: bool) -> tuple[Meme | None, tuple[str, str] | None]:
    """A meme, or (problem kind, what is wrong)."""
    if isinstance(record, BadLine):
        return None, ("bad_json", f"not JSON ({record.error})")
    if not isinstance(record, dict):
        return None, ("unknown_layout", f"a record must be a JSON object, got {type(record).__name__}")
    text_key = next((k for k in TEXT_KEYS if k in record), None)
    if text_key is None or not isinstance(record[text_key], str):
        return None, ("unknown_layout", f"no text under {' or '.join(TEXT_KEYS)} (keys: {sorted(record)[:8]})")
    if "label" not in record:
        return None, ("no_label", "no label")
    label = _label(record["label"])
    if label is None:
        return None, ("bad_label", f"label must be 0 or 1, got {record['label']!r}")
    image_key = next((k for k in IMAGE_KEYS if k in record), None)
    name = record.get(image_key) if image_key else None
    if name is not None and not isinstance(name, str):
        return None, ("unknown_layout", f"{image_key} must be a file name, got {name!r}")
    ident = record.get("id", Path(name).stem if name else None)
    if ident is None or isinstance(ident, (dict, list)) or str(ident) == "":
        return None, ("unknown_layout", f"no id, and no image name to take one from (keys: {sorted(record)[:8]})")
    image = _find_image(folder, name) if name else None
    if images:
        if image is None:
            return None, ("missing_image", f"image {name!r} not found" if name else "no image named")
        if not _decodes(image):
            return None, ("corrupt_image", f"image {image.name} does not decode")
    extra = {k: v for k, v in record.items() if k not in _KNOWN and isinstance(v, (str, int, float, bool, list))}
    return Meme(str(ident), task.name, record[text_key], image, label, extra), None


def _label(value: Any) -> int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in (0, 1):
        return value
    if isinstance(value, str) and value.strip() in ("0", "1"):
        return int(value)
    if isinstance(value, float) and value in (0.0, 1.0):
        return int(value)
    return None


def _find_image(folder: Path, name: str) -> Path | None:
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        return None  # a record never points outside its task folder
    for sub in IMAGE_FOLDERS:
        candidate = folder / sub / relative
        if candidate.is_file():
            return candidate
    return None


def _decodes(image: Path) -> bool:
    """The image opens and decodes whole (`verify` alone passes half a JPEG)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(image) as picture:
            picture.verify()
        with Image.open(image) as picture:
            picture.load()
        return True
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False
