"""Chat messages in the OpenAI format, checked once at the door.

A message is a dict `{"role": ..., "content": ...}` where content is a string or a list of
parts (`{"type": "text", "text": ...}` or `{"type": "image_url", "image_url": {"url": ...}}`).
A plain string prompt means one user message. Backends convert at their edge.
"""

from __future__ import annotations

import base64
import mimetypes
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

from verticals.llm.errors import LLMError

Message = dict[str, Any]
Prompt = Union[str, Sequence[Message]]
ROLES = ("system", "user", "assistant")


def as_messages(prompt: Prompt) -> list[Message]:
    """Return `prompt` as a validated list of messages (a string becomes one user message).

    Raises:
        LLMError: the prompt is empty, a role is unknown, or a content part is malformed.
    """
    if isinstance(prompt, str):
        if not prompt.strip():
            raise LLMError("the prompt is empty; give some text to send to the model")
        return [{"role": "user", "content": prompt}]
    messages = list(prompt)
    if not messages:
        raise LLMError("the message list is empty; give at least one user message")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise LLMError(f"message {i} must be a dict with 'role' and 'content', got {message!r:.80}")
        if message["role"] not in ROLES:
            raise LLMError(f"message {i} has role {message['role']!r}; allowed roles are {', '.join(ROLES)}")
        _check_content(message["content"], i)
    return [dict(m) for m in messages]


def _check_content(content: Any, index: int) -> None:
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise LLMError(f"message {index} content must be a string or a list of parts, got {type(content).__name__}")
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            continue
        if kind == "image_url" and isinstance(part.get("image_url"), dict) and "url" in part["image_url"]:
            continue
        raise LLMError(f"message {index} has a malformed content part {part!r:.80}; use text or image_url parts")


def text_of(message: Message) -> str:
    """The text of a message, refusing images (for text-only backends)."""
    content = message["content"]
    if isinstance(content, str):
        return content
    if any(part["type"] == "image_url" for part in content):
        raise LLMError("this model reads text only; send images to a multimodal OpenAI-compatible server")
    return "\n".join(part["text"] for part in content)


def image_part(image: str | Path | bytes, mime: str | None = None) -> dict[str, Any]:
    """A content part carrying an image as a data URL (from a path or raw bytes)."""
    if isinstance(image, bytes):
        data, mime = image, mime or "image/png"
    else:
        path = Path(image)
        if not path.is_file():
            raise LLMError(f"image file not found: {path}")
        data = path.read_bytes()
        mime = mime or mimetypes.guess_type(path.name)[0] or "image/png"
    url = f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
    return {"type": "image_url", "image_url": {"url": url}}
