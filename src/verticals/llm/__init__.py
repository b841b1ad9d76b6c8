"""The one door to language models: every system talks to models only through `LanguageModel`.

Example:
    >>> from verticals.llm import open_model                        # doctest: +SKIP
    >>> model = open_model("bundled")                               # doctest: +SKIP
    >>> model.choice_probs(["Is 190 mg/dl LDL high?"], ["Yes", "No"])  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from verticals.llm.errors import LLMError, ModelLoadError, ServerError
from verticals.llm.messages import Message, image_part, text_of

if TYPE_CHECKING:
    from verticals.llm._api_errors import APIError, install_error_handlers
    from verticals.llm._protocol import ErrorResponse
    from verticals.llm._request_limits import RequestLimits
    from verticals.llm.base import GenerationParams, LanguageModel
    from verticals.llm.bundled import convert_gguf
    from verticals.llm.cache import ResponseCache
    from verticals.llm.cli import quiet_transformers
    from verticals.llm.image_text import cached_reader, images_as_text
    from verticals.llm.loader import open_model
    from verticals.llm.local import LocalModel
    from verticals.llm.openai_api import OpenAIModel

# torch and transformers load only when a model class is first used (keeps `verticals --help` fast).
_LAZY = {
    # the HTTP layer our servers share (this one's and the patient app's): one error shape, bounded requests
    "APIError": "verticals.llm._api_errors",
    "install_error_handlers": "verticals.llm._api_errors",
    "ErrorResponse": "verticals.llm._protocol",
    "RequestLimits": "verticals.llm._request_limits",
    "GenerationParams": "verticals.llm.base",
    "convert_gguf": "verticals.llm.bundled",
    "LanguageModel": "verticals.llm.base",
    "ResponseCache": "verticals.llm.cache",
    "quiet_transformers": "verticals.llm.cli",  # for every CLI that loads a model: no transformers chatter
    "cached_reader": "verticals.llm.image_text",
    "images_as_text": "verticals.llm.image_text",
    "open_model": "verticals.llm.loader",
    "LocalModel": "verticals.llm.local",
    "OpenAIModel": "verticals.llm.openai_api",
}

__all__ = ["APIError", "ErrorResponse", "GenerationParams", "LLMError", "LanguageModel", "LocalModel", "Message",
           "ModelLoadError", "OpenAIModel", "RequestLimits", "ResponseCache", "ServerError", "cached_reader",
           "convert_gguf", "image_part", "images_as_text", "install_error_handlers", "open_model", "quiet_transformers",
           "text_of"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'verticals.llm' has no attribute {name!r}")
