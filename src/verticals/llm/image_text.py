"""Image parts made readable for a text model: each image is replaced by the text OCR reads in it.

Why: a meme's message is text plus an image; a text-only model (the bundled SmolLM2, any local
folder) cannot take the image, but the caption drawn on it is most of what it says. `verticals
llm serve` does this for text models (and says so in the reply's model name), and GOAT's `ocr+`
models do the same, with the OCR text cached per image.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable

from verticals.llm.cache import ResponseCache, request_key
from verticals.llm.errors import LLMError
from verticals.llm.messages import Message

Reader = Callable[[bytes], str]


def image_bytes(url: str) -> bytes:
    """The bytes of a `data:` URL (this machine fetches nothing from the network).

    Raises:
        LLMError: not a base64 `data:` URL.
    """
    head, comma, data = url.partition(",")
    if not url.startswith("data:") or not comma or ";base64" not in head:
        raise LLMError("image_url must be a base64 data: URL here (data:image/png;base64,...); "
                       "images are not fetched from the network")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise LLMError(f"the image's data: URL is not valid base64: {err}") from err


def as_text_part(text: str) -> dict[str, str]:
    """What stands where an image was: the text read in it, or a note that there was none."""
    said = f'an image with the text "{text}"' if text else "an image with no readable text"
    return {"type": "text", "text": f"[{said}]"}


def images_as_text(messages: list[Message], read: Reader) -> tuple[list[Message], int]:
    """`messages` with every image part replaced by its OCR text, and how many images there were."""
    converted, count = [], 0
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            converted.append(message)
            continue
        parts = []
        for part in content:
            if part.get("type") == "image_url":
                parts.append(as_text_part(read(image_bytes(part["image_url"]["url"]))))
                count += 1
            else:
                parts.append(part)
        converted.append({**message, "content": parts})
    return converted, count


def cached_reader(read: Reader, engine: str, cache: ResponseCache | None) -> Reader:
    """`read`, remembering each image's text in `cache` under (engine, the image's SHA-256)."""
    if cache is None:
        return read

    def remembered(data: bytes) -> str:
        key = request_key({"kind": "ocr", "engine": engine, "image": hashlib.sha256(data).hexdigest()})
        hit = cache.get(key)
        if hit is not None:
            return str(hit)
        text = read(data)
        cache.put_many({key: text})
        return text

    return remembered
