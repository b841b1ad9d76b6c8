"""`fusion`: the trained offline baseline, for a user who has a train split.

The meme's caption as the bundled OCR reads it, embedded by the bundled MiniLM (384 values), and
its picture as the bundled Open-NSFW CNN's pooled layer (1,024 values); a logistic regression per
task on the train split, on the text alone (`fusion:text`), the picture alone (`fusion:image`) or
both side by side (`fusion`), so that what each modality is worth shows in the leaderboard.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from verticals.goat.config import GoatError
from verticals.goat.data import Meme
from verticals.goat.models import MemeModel, MemeRequest
from verticals.goat.tasks import Task
from verticals.llm import Message, ResponseCache, cached_reader
from verticals.progress import progress_bar

PARTS = ("text", "image", "both")
#: inverse regularisation of the logistic regression (scikit-learn's default; features are standardised)
C = 1.0
#: raise when the features change for a reason the encoders' names do not show (our pre-processing)
FEATURES_VERSION = 1


class FusionModel(MemeModel):
    """A logistic regression per task on OCR-text and picture features of the train split."""

    trains = True

    def __init__(self, spec: str, parts: str, cache: ResponseCache | None) -> None:
        from verticals.encoders import image_encoder_name, ocr_engine, read_text, text_encoder_name

        if parts not in PARTS:
            raise GoatError(f"fusion takes text, image or both, got {parts!r}")
        self.spec, self.parts = spec, parts
        self._names = [ocr_engine(), text_encoder_name(), image_encoder_name()]
        self._read = cached_reader(read_text, self._names[0], cache)
        self._cache = cache
        self._head: Pipeline | None = None
        self._task = ""
        self._last: tuple[object, np.ndarray] = (None, np.zeros(0))

    @property
    def fingerprint(self) -> str:
        return f"fusion:{self.parts}:C={C}:" + ":".join(self._names)

    def fit(self, task: Task, train: list[Meme]) -> None:
        """Train this task's head on the train split (both classes needed)."""
        labels = np.array([m.label for m in train])
        if len(set(labels.tolist())) < 2:
            raise GoatError(f"{task.name}: fusion needs memes of both labels in the train split")
        head = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, class_weight="balanced"))
        self._head = head.fit(self._features(train, f"{task.name} train"), labels)
        self._task = task.name

    def show(self, requests: list[MemeRequest]) -> list[list[Message]]:
        used = {"text": "the text read in the picture", "image": "the picture's features",
                "both": "the text read in the picture and the picture's features"}[self.parts]
        return [[{"role": "user", "content": f"[{self.spec}: {used}, logistic regression on the train split]"}]
                for _ in requests]

    def answers(self, requests: list[MemeRequest], shown: list[list[Message]], max_tokens: int) -> list[str | None]:
        return ["Yes" if p >= 0.5 else "No" for p in self.yes_probabilities(requests, shown)]

    def yes_probabilities(self, requests: list[MemeRequest], shown: list[list[Message]]) -> np.ndarray:
        if self._head is None:
            raise GoatError("fusion was asked before it was trained")
        key = (self._task, tuple(r.meme.id for r in requests))
        if self._last[0] != key:  # answers, then probabilities, ask about the same memes: compute once
            features = self._features([r.meme for r in requests], f"{self._task} test")
            self._last = (key, self._head.predict_proba(features)[:, 1])
        return self._last[1]

    def _features(self, memes: list[Meme], what: str) -> np.ndarray:
        from verticals.encoders import embed_texts, image_features

        missing = [m.id for m in memes if m.image is None]
        if missing:
            raise GoatError(f"fusion reads the pictures, and meme {missing[0]} has none")
        pictures = [m.image.read_bytes() for m in memes]  # type: ignore[union-attr]
        blocks = []
        if self.parts in ("text", "both"):
            texts = []
            with progress_bar(f"reading {what}", len(pictures)) as advance:
                for data in pictures:
                    texts.append(self._read(data))
                    advance()
            blocks.append(_cached(lambda items: embed_texts([t.decode() for t in items]), self._names[1],
                                  [t.encode() for t in texts], self._cache))
        if self.parts in ("image", "both"):
            blocks.append(_cached(image_features, self._names[2], pictures, self._cache))
        return np.hstack(blocks)


def _cached(encode: Callable[[list[bytes]], np.ndarray], encoder: str, items: list[bytes],
            cache: ResponseCache | None) -> np.ndarray:
    """`encode(items)`, each row remembered in `cache` under (encoder, its input's SHA-256) as float32,
    so a rerun, or another fusion variant on the same memes, computes no feature twice."""
    if cache is None:
        return np.asarray(encode(items), dtype=np.float32)
    scope = f"features\x1f{FEATURES_VERSION}\x1f{encoder}\x1f"
    keys = [hashlib.sha256((scope + hashlib.sha256(item).hexdigest()).encode()).hexdigest() for item in items]
    found = cache.get_many(keys)
    rows = {i: np.frombuffer(base64.b64decode(found[key]), dtype=np.float32) for i, key in enumerate(keys)
            if key in found}
    missing = [i for i in range(len(items)) if i not in rows]
    if missing:
        computed = np.asarray(encode([items[i] for i in missing]), dtype=np.float32)
        cache.put_many({keys[i]: base64.b64encode(row.tobytes()).decode("ascii") for i, row in zip(missing, computed)})
        rows.update(zip(missing, computed))
    if len({row.shape for row in rows.values()}) > 1:  # a damaged entry: compute them all again
        computed = np.asarray(encode(items), dtype=np.float32)
        cache.put_many({key: base64.b64encode(row.tobytes()).decode("ascii") for key, row in zip(keys, computed)})
        return computed
    return np.stack([rows[i] for i in range(len(items))])
