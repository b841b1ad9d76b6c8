"""`LanguageModel`: the one interface every system uses to talk to a language model.

Backends implement three hooks (`_chat`, `_stream`, `_choice_logprobs`); this base validates
input once, serves deterministic requests from the shared `ResponseCache`, and sends only the
misses to the backend (the shape of VLMEvalKit's `generate` / `generate_inner`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from verticals.llm.cache import ResponseCache, request_key
from verticals.llm.errors import LLMError
from verticals.llm.messages import Message, Prompt, as_messages
from verticals.progress import progress_bar

#: OpenAI's ranges, shared by our client and our server so that neither accepts what the other refuses.
MAX_TEMPERATURE = 2.0
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1
MAX_STOP = 4


@dataclass(frozen=True)
class GenerationParams:
    """Sampling settings of one chat request; `temperature=0` means greedy (and cacheable)."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise LLMError(f"max_tokens must be at least 1, got {self.max_tokens}")
        if not 0 <= self.temperature <= MAX_TEMPERATURE:
            raise LLMError(f"temperature must be in [0, {MAX_TEMPERATURE}], got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise LLMError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.seed is not None and not SEED_MIN <= self.seed <= SEED_MAX:
            raise LLMError(f"seed must be a 64-bit integer ({SEED_MIN} to {SEED_MAX}), got {self.seed}")
        if any(not s for s in self.stop):
            raise LLMError("stop strings must not be empty")
        if len(self.stop) > MAX_STOP:
            raise LLMError(f"at most {MAX_STOP} stop strings, got {len(self.stop)}")

    @property
    def deterministic(self) -> bool:
        return self.temperature == 0


class LanguageModel(ABC):
    """A chat model that can also score fixed answer options.

    Args:
        cache (`ResponseCache`, *optional*): where deterministic answers are kept; none by default.
    """

    #: rows scored per backend call in `choice_probs`; each chunk is committed to the cache.
    scoring_chunk_size = 64

    def __init__(self, *, cache: ResponseCache | None = None) -> None:
        self.cache = cache

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """A string that changes whenever the model's answers could change (weights, adapter, dtype)."""

    # -- tuning: what a system may ask of a model it wants to fine-tune -------------------------
    #: whether `copy_for_tuning` and `with_adapter` work (weights on this machine); a served model says no
    tunable: bool = False

    def copy_for_tuning(self) -> LanguageModel:
        """A fresh float32 copy of the weights for `verticals.finetune` to change (this model stays as it is)."""
        raise LLMError(f"{self.fingerprint} is not tunable here: its weights are not on this machine")

    def with_adapter(self, adapter: str | Path) -> LanguageModel:
        """The same base weights with a LoRA `adapter` on, sharing this model's response cache."""
        raise LLMError(f"{self.fingerprint} cannot take an adapter here: its weights are not on this machine")

    # -- public surface -------------------------------------------------------------------------
    def chat(self, messages: Prompt, *, max_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
             stop: Sequence[str] = (), seed: int | None = None) -> str:
        """The assistant's reply to `messages` (a string is one user message)."""
        return self.chat_batch([messages], max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                               stop=stop, seed=seed)[0]

    def chat_batch(self, conversations: Sequence[Prompt], *, max_tokens: int = 256, temperature: float = 0.0,
                   top_p: float = 1.0, stop: Sequence[str] = (), seed: int | None = None,
                   progress: bool = False) -> list[str]:
        """Replies to many conversations; cached ones are served, the rest go to the backend."""
        params = GenerationParams(max_tokens, temperature, top_p, tuple(stop), seed)
        convs = [as_messages(c) for c in conversations]
        keys = [self._key("chat", c, asdict(params)) for c in convs] if self._caching(params) else None
        return self._cached_map("chat", convs, keys, lambda chunk: self._chat_many(chunk, params), progress)

    def stream(self, messages: Prompt, *, max_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
               stop: Sequence[str] = (), seed: int | None = None) -> Iterator[str]:
        """Yield the reply in pieces as it is generated (a cached reply comes as one piece)."""
        params = GenerationParams(max_tokens, temperature, top_p, tuple(stop), seed)
        convo = as_messages(messages)
        key = self._key("chat", convo, asdict(params)) if self._caching(params) else None
        if key is not None and self.cache is not None and (hit := self.cache.get(key)) is not None:
            yield hit
            return
        pieces = []
        for piece in self._stream(convo, params):
            pieces.append(piece)
            yield piece
        if key is not None and self.cache is not None:
            self.cache.put_many({key: "".join(pieces)})

    def choice_probs(self, prompts: Sequence[Prompt], choices: Sequence[str], *,
                     progress: bool = False) -> np.ndarray:
        """Probability of each answer option after each prompt, from token log-probabilities.

        Args:
            prompts: strings (one user message each) or message lists; the options are scored as
                the start of the assistant's reply.
            choices: at least two distinct, non-empty answer options, e.g. `["Yes", "No"]`.
            progress: draw a progress bar.

        Returns:
            An array of shape `(len(prompts), len(choices))` whose rows sum to 1.

        Raises:
            LLMError: no prompts, fewer than two choices, an empty or repeated choice, or a backend
                that cannot give log-probabilities.
        """
        choices = check_choices(choices)
        if len(prompts) == 0:
            raise LLMError("no prompts to score; give at least one prompt")
        convs = [as_messages(p) for p in prompts]
        keys = [self._key("choices", c, {"choices": list(choices)}) for c in convs]
        rows = self._cached_map("scoring", convs, keys, lambda chunk: np.asarray(
            self._choice_logprobs(chunk, choices), dtype=np.float64).tolist(), progress)
        return normalise(np.array(rows, dtype=np.float64))

    # -- backend hooks --------------------------------------------------------------------------
    @abstractmethod
    def _chat(self, messages: list[Message], params: GenerationParams) -> str:
        """One reply."""

    @abstractmethod
    def _stream(self, messages: list[Message], params: GenerationParams) -> Iterator[str]:
        """One reply, in pieces."""

    @abstractmethod
    def _choice_logprobs(self, prompts: list[list[Message]], choices: tuple[str, ...]) -> np.ndarray:
        """Log-probability of each choice (summed over its tokens), shape `(n, k)`; need not be normalised."""

    def _chat_many(self, conversations: list[list[Message]], params: GenerationParams) -> list[str]:
        """Replies to several conversations; backends that can overlap requests override this."""
        return [self._chat(c, params) for c in conversations]

    # -- helpers --------------------------------------------------------------------------------
    def _cached_map(self, what: str, convs: list[list[Message]], keys: list[str] | None,
                    compute: Callable[[list[list[Message]]], list[Any]], progress: bool) -> list[Any]:
        """Serve cached answers, compute the rest in chunks; each chunk is committed before the next.

        With keys (deterministic requests), a request asked twice is computed once and both get the
        same answer: computed apart, in batches of other shapes, they could differ in the last
        digits, and the cache, which keeps one, would make a rerun differ from the first run.
        """
        cache = self.cache if keys is not None else None
        done: dict[int, Any] = {}
        if cache is not None and keys is not None:
            hits = cache.get_many(keys)
            done = {i: hits[k] for i, k in enumerate(keys) if k in hits}
        todo = [i for i in range(len(convs)) if i not in done]
        copies: dict[int, list[int]] = {}  # first index of a request -> the later indices asking the same
        if keys is not None:
            first: dict[str, int] = {}
            unique = []
            for i in todo:
                if keys[i] in first:
                    copies.setdefault(first[keys[i]], []).append(i)
                else:
                    first[keys[i]] = i
                    unique.append(i)
            todo = unique
        with progress_bar(what, len(convs), enabled=progress) as advance:
            advance(len(done))
            for start in range(0, len(todo), self.scoring_chunk_size):
                chunk = todo[start : start + self.scoring_chunk_size]
                done.update(zip(chunk, compute([convs[i] for i in chunk])))
                if cache is not None and keys is not None:
                    cache.put_many({keys[i]: done[i] for i in chunk})
                for i in chunk:
                    done.update(dict.fromkeys(copies.get(i, []), done[i]))
                advance(len(chunk) + sum(len(copies.get(i, [])) for i in chunk))
        return [done[i] for i in range(len(convs))]

    def _caching(self, params: GenerationParams) -> bool:
        return self.cache is not None and params.deterministic

    def _key(self, kind: str, messages: list[Message], extra: dict) -> str:
        return request_key({"model": self.fingerprint, "kind": kind, "messages": messages, **extra})


def check_choices(choices: Sequence[str]) -> tuple[str, ...]:
    """Validate answer options: at least two, non-empty, distinct."""
    if isinstance(choices, str):
        raise LLMError(f"choices must be a list of options, got the string {choices!r}")
    options = tuple(choices)
    if len(options) < 2:
        raise LLMError(f"give at least two choices to compare, got {list(options)}")
    if any(not isinstance(c, str) or not c.strip() for c in options):
        raise LLMError(f"every choice must be non-empty text, got {list(options)}")
    if len(set(options)) != len(options):
        raise LLMError(f"choices must be distinct, got {list(options)}")
    return options


def normalise(logprobs: np.ndarray) -> np.ndarray:
    """Softmax over each row of log-probabilities (rows of -inf only are an error)."""
    if not np.isfinite(logprobs.max(axis=1)).all():
        raise LLMError("the model gave no probability to any choice for some prompt")
    shifted = np.exp(logprobs - logprobs.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
