"""Models behind one method: every GOAT model turns meme conversations into answers (and, where it
can, P(Yes)), and every one but `replay` talks through `verticals.llm`, so answers are cached and a
killed run resumes without asking again.

Model specs (`--model`):
- `openai:URL[#name]` (or the bare URL): any OpenAI-compatible multimodal server, images as data URLs;
- `ocr+MODEL`: a text model (`bundled`, a folder, a server) that gets each image as the text the
  bundled OCR reads in it, cached per image;
- `text+MODEL`: a text model that gets the meme's text only (no image at all);
- `replay:FILE`: answers made elsewhere, a JSONL of `{"id", "answer"}` (optional `task`, `probability`);
- `fusion`, `fusion:text`, `fusion:image`: a logistic regression per task on the train split, on the
  bundled encoders' features of the OCR text and the picture (`fusion.py`).
"""

from __future__ import annotations

import hashlib
import importlib.util
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from verticals.goat.config import GoatError
from verticals.goat.data import BadLine, Meme, read_records
from verticals.goat.tasks import Task
from verticals.llm import LanguageModel, Message, ResponseCache, cached_reader, images_as_text, open_model
from verticals.progress import progress_bar

CHOICES = ("Yes", "No")


@dataclass(frozen=True)
class MemeRequest:
    """One question about one meme: the meme, and the conversation that asks it."""

    meme: Meme
    messages: list[Message]


class MemeModel(ABC):
    """A model as the harness sees it: `show` the conversations once, then `answers` (and P(Yes))."""

    #: the model spec as given, e.g. `ocr+bundled`
    spec: str
    #: whether the memes' images must be there (the loader skips memes whose image is missing or broken)
    reads_images: bool = True
    #: whether it learns each task from the train split first (`fit`)
    trains: bool = False

    def fit(self, task: Task, train: list[Meme]) -> None:
        """Learn `task` from its train split (only for models that train)."""
        raise GoatError(f"{self.spec} does not learn from a train split")

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """Changes whenever the answers could change (recorded in results)."""

    @property
    def gives_probabilities(self) -> bool:
        """Whether `yes_probabilities` can answer (checked before a run that asks for them)."""
        return True

    def show(self, requests: list[MemeRequest]) -> list[list[Message]]:
        """The conversations as the model receives them (also written to the samples file)."""
        return [r.messages for r in requests]

    @abstractmethod
    def answers(self, requests: list[MemeRequest], shown: list[list[Message]], max_tokens: int) -> list[str | None]:
        """One raw answer per request (None: no answer exists, e.g. missing from a replayed file)."""

    @abstractmethod
    def yes_probabilities(self, requests: list[MemeRequest], shown: list[list[Message]]) -> np.ndarray:
        """P(Yes) per request."""


class ChatModel(MemeModel):
    """A `verticals.llm` model, given the images, their OCR text, or the text alone."""

    def __init__(self, spec: str, lm: LanguageModel, images: str, cache: ResponseCache | None) -> None:
        self.spec, self.lm, self.images = spec, lm, images
        self.reads_images = images in ("images", "ocr")
        self._read = None
        self._engine = ""
        if images == "ocr":
            from verticals.encoders import ocr_engine, read_text

            self._engine = ocr_engine()
            self._read = cached_reader(read_text, self._engine, cache)

    @property
    def fingerprint(self) -> str:
        return f"{self.images}:{self._engine + ':' if self._engine else ''}{self.lm.fingerprint}"

    def show(self, requests: list[MemeRequest]) -> list[list[Message]]:
        # a text+ model's requests are built without images (reads_images is False): nothing to change
        if self.images != "ocr":
            return [r.messages for r in requests]
        shown = []
        with progress_bar("reading images", len(requests)) as advance:
            for request in requests:
                shown.append(images_as_text(request.messages, self._read)[0])  # type: ignore[arg-type]
                advance()
        return shown

    def answers(self, requests: list[MemeRequest], shown: list[list[Message]], max_tokens: int) -> list[str | None]:
        return list(self.lm.chat_batch(shown, max_tokens=max_tokens, temperature=0.0, progress=True))

    def yes_probabilities(self, requests: list[MemeRequest], shown: list[list[Message]]) -> np.ndarray:
        return np.asarray(self.lm.choice_probs(shown, list(CHOICES), progress=True))[:, 0]


class ReplayModel(MemeModel):
    """Answers made elsewhere, read from a JSONL file, scored like any model's."""

    reads_images = False

    def __init__(self, spec: str, file: Path) -> None:
        self.spec, self.file = spec, file
        self._answers: dict[tuple[str | None, str], dict[str, Any]] = {}
        if not file.is_file():
            raise GoatError(f"replay file not found: {file}")
        for number, row in read_records(file):
            if isinstance(row, BadLine):
                raise GoatError(f"{file}:{number}: not JSON ({row.error})")
            if not isinstance(row, dict) or "id" not in row or not isinstance(row.get("answer"), str):
                raise GoatError(f"{file}:{number}: each line needs an id and a text answer, "
                                'e.g. {"id": "42", "answer": "Yes"}')
            self._answers[(row.get("task"), str(row["id"]))] = row
        if not self._answers:
            raise GoatError(f"replay file {file} holds no answers")

    @property
    def fingerprint(self) -> str:
        return f"replay:{hashlib.sha256(self.file.read_bytes()).hexdigest()[:16]}"

    @property
    def gives_probabilities(self) -> bool:
        return all(isinstance(row.get("probability"), (int, float)) for row in self._answers.values())

    def _row(self, meme: Meme) -> dict[str, Any] | None:
        return self._answers.get((meme.task, meme.id)) or self._answers.get((None, meme.id))

    def answers(self, requests: list[MemeRequest], shown: list[list[Message]], max_tokens: int) -> list[str | None]:
        return [row["answer"] if (row := self._row(r.meme)) else None for r in requests]

    def yes_probabilities(self, requests: list[MemeRequest], shown: list[list[Message]]) -> np.ndarray:
        rows = [self._row(r.meme) for r in requests]
        return np.array([float(row["probability"]) if row else np.nan for row in rows])


def check_spec(spec: str) -> None:
    """Refuse a `--model` spec of no known form (before anything loads).

    Raises:
        GoatError: not openai:/http(s)://, ocr+, text+ or replay:.
    """
    fusion = spec in ("fusion", "fusion:text", "fusion:image")
    known = spec.startswith(("replay:", "ocr+", "text+", "openai:", "http://", "https://"))
    if not fusion and (not known or spec.endswith(("+", ":"))):
        raise GoatError(f"unknown model {spec!r}: use openai:URL[#name] for a multimodal server, ocr+MODEL or "
                        "text+MODEL for a text model (MODEL: bundled, a folder, or a URL), replay:FILE, or "
                        "fusion[:text|:image] for the trained baseline")
    if spec.startswith("ocr+") and importlib.util.find_spec("rapidocr_onnxruntime") is None:
        raise GoatError("ocr+ models need the bundled OCR, which is not installed: run make install "
                        "(it installs rapidocr-onnxruntime==1.4.4 with --no-deps)")


def spec_reads_images(spec: str) -> bool:
    """Whether the model a spec names needs the memes' images (known before it loads)."""
    return not spec.startswith(("replay:", "text+"))


def spec_trains(spec: str) -> bool:
    """Whether the model a spec names learns from the train split (known before it loads)."""
    return spec.startswith("fusion")


def open_meme_model(spec: str, *, cache: ResponseCache | None, device: str = "auto",
                    adapter: Path | None = None, concurrency: int = 8) -> MemeModel:
    """The model a `--model` spec names (see the module docstring); a local model's weights load on
    first use, so a rerun whose answers are all cached never loads them.

    Raises:
        GoatError: an unknown spec, or a text model named without `ocr+` or `text+`.
    """
    if spec.startswith("replay:"):
        return ReplayModel(spec, Path(spec.removeprefix("replay:")).expanduser())
    if spec_trains(spec):
        from verticals.goat.fusion import FusionModel

        check_spec(spec)
        return FusionModel(spec, spec.partition(":")[2] or "both", cache)
    for prefix, images in (("ocr+", "ocr"), ("text+", "text")):
        if spec.startswith(prefix):
            inner = spec.removeprefix(prefix)
            lm = open_model(_url(inner), adapter=adapter, device=device, cache=cache, concurrency=concurrency,
                            lazy=True)
            return ChatModel(spec, lm, images, cache)
    check_spec(spec)
    if adapter is not None:
        raise GoatError("--adapter applies to a local model (ocr+MODEL or text+MODEL), not to a server")
    return ChatModel(spec, open_model(_url(spec), cache=cache, concurrency=concurrency), "images", cache)


def _url(spec: str) -> str:
    return spec.removeprefix("openai:")
