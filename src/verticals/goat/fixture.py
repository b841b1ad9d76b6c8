"""A synthetic meme set in the shape of the GOAT-Bench release, for tests and the quick demo.

Captions (`fixture_captions.toml`) are drawn on pictures with Pillow: varied fonts, sizes, colours
and positions, a little noise so OCR has real work. Labels follow `RECIPES`, built so that some
memes can be told from the caption alone, some from the picture alone (a benign caption on a
hostile picture), and some only from both (a rough caption is abuse on a plain picture, banter on
a playful one); each record's `cue` says which, and `cue_is_decidable` checks the claim. Every
field name and file format of the release appears in some task. The set is marked
`fixture = true` in its `goat.toml`, and every result computed on it says so: never GOAT-Bench.
"""

from __future__ import annotations

import functools
import json
import os
import random
import shutil
import tempfile
import tomllib
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from verticals.goat.config import GoatError
from verticals.goat.tasks import PAPER_TASKS, SET_FILE

if TYPE_CHECKING:
    from PIL import Image, ImageDraw

#: how the fixture's memes are made: (caption tone, picture, label, what decides it, weight). A tone
#: decides the label when all its recipes share one (abusive, wholesome); so does a picture (hostile,
#: calm); the rest need both.
RECIPES = [("abusive", "plain", 1, "text", 2), ("abusive", "playful", 1, "text", 1),
           ("wholesome", "plain", 0, "text", 2),
           ("benign", "hostile", 1, "image", 2), ("benign", "calm", 0, "image", 2),
           ("rough", "plain", 1, "both", 2), ("rough", "playful", 0, "both", 2)]
SIZE = (360, 270)
_FONTS = ["DejaVuSans-Bold.ttf", "DejaVuSans.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSansMono-Bold.ttf"]


def write_fixture(out: Path, *, train: int = 60, test: int = 40, seed: int = 0) -> Path:
    """Write the fixture to `out` (which must be empty or absent) and return it.

    Args:
        out: the folder to create: one sub-folder per task, and `goat.toml`.
        train, test: memes per task in each split.
        seed: everything drawn depends on it alone.

    Raises:
        GoatError: `out` exists and is not empty, or a size is not positive.
    """
    if train < 1 or test < 1:
        raise GoatError(f"train and test need at least one meme per task, got {train} and {test}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise GoatError(f"{out} exists and is not an empty folder; give a new folder for the fixture")
    captions = tomllib.loads(resources.files("verticals.goat").joinpath("fixture_captions.toml").read_text("utf-8"))
    rng = random.Random(seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))  # whole or not at all
    try:
        for task in PAPER_TASKS:
            folder = staging / task
            (folder / "img").mkdir(parents=True)
            for split, count in (("train", train), ("test", test)):
                records = [_meme(task, split, i, captions[task], folder, rng) for i in range(count)]
                _LAYOUTS[task](folder, split, records)
        (staging / SET_FILE).write_text('# A synthetic meme set made by `verticals goat fixture`: not GOAT-Bench.\n'
                                        f'name = "goat fixture (synthetic, seed {seed})"\nfixture = true\n',
                                        encoding="utf-8")
        os.chmod(staging, 0o755)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def cue_is_decidable(cue: str) -> bool:
    """Whether RECIPES make every meme of `cue` decidable the way the cue says, and only that way."""
    by_tone: dict[str, set[int]] = {}
    by_picture: dict[str, set[int]] = {}
    for tone, picture, label, _, _ in RECIPES:
        by_tone.setdefault(tone, set()).add(label)
        by_picture.setdefault(picture, set()).add(label)
    for tone, picture, _, recipe_cue, _ in RECIPES:
        if recipe_cue != cue:
            continue
        from_text, from_picture = len(by_tone[tone]) == 1, len(by_picture[picture]) == 1
        expected = {"text": (True, False), "image": (False, True), "both": (False, False)}[cue]
        if (from_text, from_picture) != expected:
            return False
    return True


def _meme(task: str, split: str, index: int, captions: dict[str, list[str]], folder: Path,
          rng: random.Random) -> dict[str, Any]:
    tone, motif, label, cue, _ = rng.choices(RECIPES, weights=[r[4] for r in RECIPES])[0]
    text = rng.choice(captions[tone])
    name = f"{task[:3]}_{split}_{index:04d}.png"
    _draw(text, motif, rng).save(folder / "img" / name, optimize=False)
    return {"id": f"{task[:3]}-{split}-{index:04d}", "text": text, "img": f"img/{name}", "label": label,
            "cue": cue, "picture": motif}


# -- the release's layouts, one per task ---------------------------------------------------------
def _jsonl(folder: Path, split: str, records: list[dict[str, Any]]) -> None:
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _hatefulness(folder: Path, split: str, records: list[dict[str, Any]]) -> None:
    _jsonl(folder, split, records)  # text, img, id, label: as FHM


def _misogyny(folder: Path, split: str, records: list[dict[str, Any]]) -> None:
    kinds = ["shaming", "stereotype", "objectification", "violence"]
    rows = [{**{k: v for k, v in r.items() if k != "img"}, "image": r["img"],
             "sub_label": [kinds[int(r["id"][-4:]) % 4]] if r["label"] else []} for r in records]
    (folder / f"{split}.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")  # a JSON list, "image"


def _offensiveness(folder: Path, split: str, records: list[dict[str, Any]]) -> None:
    # "org_sent" for the text, and no id: the id is the image's name without extension
    _jsonl(folder, split, [{"org_sent": r["text"], "img": r["img"], "label": r["label"], "cue": r["cue"],
                            "picture": r["picture"]} for r in records])


def _sarcasm(folder: Path, split: str, records: list[dict[str, Any]]) -> None:
    _jsonl(folder, split, [{**{k: v for k, v in r.items() if k != "img"}, "image": r["img"]} for r in records])


def _harmfulness(folder: Path, split: str, records: list[dict[str, Any]]) -> None:
    rows = [{**r, "target": ["individual", "organization", "community", "society"][i % 4] if r["label"] else None,
             "subtask": "harmc" if i % 2 else "harmp"} for i, r in enumerate(records)]
    (folder / f"{split}.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")


_LAYOUTS: dict[str, Callable[[Path, str, list[dict[str, Any]]], None]] = {
    "hatefulness": _hatefulness, "misogyny": _misogyny, "offensiveness": _offensiveness, "sarcasm": _sarcasm,
    "harmfulness": _harmfulness}


# -- drawing ---------------------------------------------------------------------------------------
def _draw(caption: str, motif: str, rng: random.Random) -> Image.Image:
    from PIL import Image, ImageDraw

    tints = {"plain": (200, 200, 205), "hostile": (90, 30, 30), "playful": (120, 200, 140), "calm": (150, 195, 235)}
    base = tuple(max(0, min(255, c + rng.randint(-25, 25))) for c in tints[motif])
    image = Image.new("RGB", SIZE, base)
    draw = ImageDraw.Draw(image)
    {"plain": _shapes, "hostile": _skull, "playful": _sun_and_balls, "calm": _landscape}[motif](draw, rng)
    for _ in range(400):  # speckle noise
        x, y = rng.randrange(SIZE[0]), rng.randrange(SIZE[1])
        shade = rng.randint(0, 255)
        draw.point((x, y), fill=(shade, shade, shade))
    _caption(draw, caption.upper() if rng.random() < 0.5 else caption, rng)
    return image


def _shapes(draw: ImageDraw.ImageDraw, rng: random.Random) -> None:
    for _ in range(5):
        x, y = rng.randrange(SIZE[0] - 60), rng.randrange(60, SIZE[1] - 100)
        colour = tuple(rng.randint(120, 230) for _ in range(3))
        box = (x, y, x + rng.randint(30, 90), y + rng.randint(20, 60))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)


def _skull(draw: ImageDraw.ImageDraw, rng: random.Random) -> None:
    cx, cy = SIZE[0] // 2 + rng.randint(-60, 60), SIZE[1] // 2 + rng.randint(-10, 10)
    draw.line((cx - 90, cy - 70, cx + 90, cy + 70), fill=(220, 20, 20), width=14)
    draw.line((cx - 90, cy + 70, cx + 90, cy - 70), fill=(220, 20, 20), width=14)
    draw.ellipse((cx - 45, cy - 50, cx + 45, cy + 35), fill=(235, 235, 225))
    draw.ellipse((cx - 28, cy - 25, cx - 8, cy - 5), fill=(10, 10, 10))
    draw.ellipse((cx + 8, cy - 25, cx + 28, cy - 5), fill=(10, 10, 10))
    draw.rectangle((cx - 22, cy + 35, cx + 22, cy + 55), fill=(235, 235, 225))


def _sun_and_balls(draw: ImageDraw.ImageDraw, rng: random.Random) -> None:
    cx, cy = rng.randint(60, 120), rng.randint(90, 150)
    draw.ellipse((cx - 35, cy - 35, cx + 35, cy + 35), fill=(250, 215, 40))
    for dx, dy in [(0, -55), (0, 55), (-55, 0), (55, 0), (40, 40), (-40, -40), (40, -40), (-40, 40)]:
        draw.line((cx + dx * 0.7, cy + dy * 0.7, cx + dx, cy + dy), fill=(250, 215, 40), width=5)
    for _ in range(3):
        x, y = rng.randint(180, 320), rng.randint(80, 170)
        colour = rng.choice([(230, 60, 160), (60, 120, 230), (250, 140, 30)])
        draw.ellipse((x - 18, y - 22, x + 18, y + 22), fill=colour)
        draw.line((x, y + 22, x + rng.randint(-8, 8), y + 60), fill=(60, 60, 60), width=2)


def _landscape(draw: ImageDraw.ImageDraw, rng: random.Random) -> None:
    horizon = rng.randint(150, 190)
    draw.rectangle((0, horizon, SIZE[0], SIZE[1]), fill=(90, 160, 90))
    draw.ellipse((rng.randint(-80, 60), horizon - 50, rng.randint(200, 320), horizon + 60), fill=(70, 140, 80))
    for x in (rng.randint(220, 330) for _ in range(3)):
        draw.line((x, horizon + 30, x, horizon + 5), fill=(40, 110, 40), width=3)
        draw.ellipse((x - 9, horizon - 4, x + 9, horizon + 12), fill=(245, 245, 250))


def _caption(draw: ImageDraw.ImageDraw, text: str, rng: random.Random) -> None:
    """Meme-style text: white with a black outline, wrapped to the width, at the top or the bottom."""
    from PIL import ImageFont

    font_file = _font_path(rng.choice(_FONTS))
    for size in range(rng.randint(22, 28), 11, -2):
        font = ImageFont.truetype(str(font_file), size)
        lines = _wrap(text, functools.partial(draw.textlength, font=font), SIZE[0] - 24)
        if len(lines) <= 3:
            break
    height = size + 6
    top = 8 if rng.random() < 0.5 else SIZE[1] - 8 - height * len(lines)
    for n, line in enumerate(lines):
        x = (SIZE[0] - draw.textlength(line, font=font)) / 2 + rng.randint(-4, 4)
        draw.text((x, top + n * height), line, font=font, fill=(255, 255, 255), stroke_width=2,
                  stroke_fill=(0, 0, 0))


def _wrap(text: str, width: Callable[[str], float], limit: float) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and width(f"{lines[-1]} {word}") <= limit:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _font_path(name: str) -> Path:
    """A DejaVu font from matplotlib's own data folder: shipped with a dependency, on every machine."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
    if not path.is_file():
        raise GoatError(f"the font {name} is missing from matplotlib's data folder {path.parent}")
    return path
