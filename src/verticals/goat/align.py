"""`align`: the paper's supervised baseline (SelfAlign) made local.

A text model learns each task from its train split: the official zero-shot prompt with the image
replaced by the text the bundled OCR reads in it (exactly what an `ocr+MODEL` evaluation sends),
answered Yes or No from the gold label, LoRA-tuned through `verticals.finetune`. The adapter is
then evaluated like any model: `verticals goat eval --model ocr+MODEL --adapter OUT`.

`goat_align.json` in the adapter folder says what it learnt from (meme set, tasks, split, base,
prompt, a fingerprint of the training conversations); `eval` refuses to score the adapter on the
memes it learnt, and `--resume` refuses training conversations that changed.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from verticals.files import write_json
from verticals.goat.config import GoatError
from verticals.goat.data import Meme, MissingImagesError, load_split, task_folder
from verticals.goat.models import ChatModel, MemeRequest
from verticals.goat.prompts import get_style, messages_for
from verticals.goat.tasks import Task, choose_tasks, read_set_info
from verticals.llm import ResponseCache, open_model, text_of

ALIGN_FILE = "goat_align.json"
#: the style whose prompt the adapter learns and is evaluated with
STYLE = "zero-shot"


@dataclass(frozen=True)
class AlignSettings:
    """What to learn from, and how long.

    Example:
        >>> AlignSettings(Path("memes"), Path("runs/align")).steps
        100
    """

    data: Path
    out: Path
    tasks: str = "all"
    base: str = "bundled"
    steps: int = 100
    batch_size: int = 8
    lr: float = 1e-3
    max_length: int = 512
    drop_rate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.base.startswith(("http://", "https://", "openai:")):
            raise GoatError("align trains local weights: give --base bundled or a model folder, not a server")


def align(settings: AlignSettings, *, cache: ResponseCache | None = None, resume: bool = False) -> dict[str, Any]:
    """Train the adapter; returns what `goat_align.json` records (with the final loss).

    Raises:
        GoatError: unusable data or settings, a run folder from other training conversations, or
            every meme too long for `max_length` (all before training starts).
    """
    from verticals.encoders import ocr_engine
    from verticals.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(steps=settings.steps, batch_size=settings.batch_size, lr=settings.lr,
                            max_length=settings.max_length, drop_rate=settings.drop_rate, seed=settings.seed,
                            save_every=max(1, settings.steps // 3))
    if not settings.data.is_dir():
        raise GoatError(f"no meme set at {settings.data}: give a folder with one sub-folder per task")
    tasks = choose_tasks(read_set_info(settings.data), settings.tasks)
    _check_out(settings.out, resume)
    train = _train_splits(settings.data, tasks, every=settings.tasks.strip() == "all")
    cache = cache if cache is not None else ResponseCache.default()
    lm = open_model(settings.base, cache=cache, dtype="float32", lazy=True)
    record: dict[str, Any] = {
        "data": str(settings.data.resolve()), "split": "train", "tasks": [t.name for t, _ in train],
        "base": settings.base, "base_fingerprint": lm.fingerprint,
        "prompt": {"style": STYLE, "fingerprint": get_style(STYLE).fingerprint}, "ocr": ocr_engine(),
        "settings": {k: v for k, v in asdict(settings).items() if k not in ("data", "out")}}
    earlier = _earlier(settings.out, record) if resume else None  # other settings: refused before any OCR
    records, too_long = _conversations(ChatModel(f"ocr+{settings.base}", lm, "ocr", cache), train,
                                       settings.max_length)
    if not records:
        raise GoatError(f"every train meme is longer than --max-length {settings.max_length} tokens")
    random.Random(settings.seed).shuffle(records)
    record.update(examples=len(records), too_long=too_long,
                  conversations=hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()[:16])
    if earlier is not None and earlier.get("conversations") != record["conversations"]:
        raise GoatError(f"{settings.out} was trained on other memes (the training conversations changed); "
                        "give a new --out")
    if earlier is not None and "final_loss" in earlier:
        print(f"{settings.out} holds a finished run ({earlier['steps']} steps): nothing to resume", file=sys.stderr)
        return earlier
    settings.out.mkdir(parents=True, exist_ok=True)
    write_json(settings.out / ALIGN_FILE, record)
    if too_long:
        print(f"{too_long} train memes longer than {settings.max_length} tokens left out", file=sys.stderr)
    print(f"training on {len(records)} memes of {len(train)} tasks", file=sys.stderr)
    result = finetune(lm, records, settings.out, config, resume=resume)
    # a run killed after its last step resumes with no step left to take, and so without a loss
    record.update(final_loss=result.final_loss if math.isfinite(result.final_loss) else None, steps=result.steps)
    write_json(settings.out / ALIGN_FILE, record)
    return record


def _train_splits(data: Path, tasks: list[Task], *, every: bool) -> list[tuple[Task, list[Meme]]]:
    """Each task's train split with its images; `--tasks all` leaves out, and names, a task whose
    folder or images are not there (as `eval` does), a task named explicitly must have them."""
    splits = []
    for task in tasks:
        if every and not task_folder(data, task).is_dir():
            continue
        try:
            splits.append((task, load_split(data, task, "train", images=True)[0]))
        except MissingImagesError as err:
            if not every:
                raise
            print(f"{task.name}: left out ({str(err).split('. ')[0]})", file=sys.stderr)
    if not splits:
        raise GoatError(f"{data} has no task with a train split and its images")
    return splits


def _conversations(reader: ChatModel, tasks: list[tuple[Task, list[Meme]]],
                   max_length: int) -> tuple[list[dict[str, Any]], int]:
    """Each train meme asked as `ocr+` asks it, answered with its gold label; and how many were longer
    than `max_length` tokens as training tokenises them (left out: cutting would cut the answer)."""
    from verticals.finetune import example_lengths

    style = get_style(STYLE)
    records, too_long = [], 0
    for task, memes in tasks:
        requests = [MemeRequest(m, messages_for(style, task, m, images=True)) for m in memes]
        for request, shown in zip(requests, reader.show(requests)):
            answer = {"role": "assistant", "content": "Yes" if request.meme.label else "No"}
            record = {"messages": [*({"role": m["role"], "content": text_of(m)} for m in shown), answer]}
            if example_lengths(reader.lm, [record])[0] > max_length:
                too_long += 1
                continue
            records.append(record)
    return records, too_long


def _check_out(out: Path, resume: bool) -> None:
    """A new run needs a new or empty folder; a resumed one, an align run's folder."""
    if out.exists() and not out.is_dir():
        raise GoatError(f"--out {out} is a file; give a folder")
    if not resume and out.exists() and any(out.iterdir()):
        raise GoatError(f"{out} is not empty; give a new --out, or --resume to continue the run in it")
    if resume and not (out / ALIGN_FILE).is_file():
        raise GoatError(f"nothing to resume in {out}: it holds no align run")


def _earlier(out: Path, record: dict[str, Any]) -> dict[str, Any]:
    """The record of the run to resume; refuses one made with other settings, tasks, base, prompt or OCR."""
    earlier = trained_on(out)
    if earlier is None:
        raise GoatError(f"nothing to resume in {out}: it holds no align run")
    changed = [k for k in ("settings", "tasks", "base_fingerprint", "prompt", "ocr") if earlier.get(k) != record[k]]
    if changed:
        raise GoatError(f"{out} holds an align run with other {', '.join(changed)}; give a new --out")
    return earlier


def trained_on(adapter: Path) -> dict[str, Any] | None:
    """What an align adapter learnt from (`goat_align.json`), or None for any other adapter.

    Raises:
        GoatError: the record is damaged (its guard against scoring the train split would be lost).
    """
    file = adapter / ALIGN_FILE
    if not file.is_file():
        return None
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GoatError(f"{file} is damaged ({err}); train the adapter again") from err
    if not isinstance(record, dict):
        raise GoatError(f"{file} is damaged (not a JSON object); train the adapter again")
    return record
