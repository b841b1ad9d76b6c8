"""The raw bytes of each token, as OpenAI's `logprobs` report them.

Why: an emoji or an accented letter is often split over several tokens, and decoding one such
token alone gives the replacement character "\ufffd", whose bytes are not the token's. The
bytes come from the tokenizer's own vocabulary instead: byte-level BPE (GPT-2, SmolLM, Qwen,
Llama 3) spells each byte as one printable character, and SentencePiece with byte fallback
(Llama 2, Mistral, Gemma) writes a lone byte as `<0xNN>`. Any other tokenizer falls back to
the UTF-8 of the decoded token.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@lru_cache(maxsize=1)
def _byte_level_alphabet() -> dict[str, int]:
    """Character -> byte of GPT-2's byte-level alphabet (printable bytes stand for themselves)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + shift)
            shift += 1
    return {c: b for b, c in chars.items()}


def _decoder_kinds(tokenizer: Any) -> set[str]:
    """Types of the fast tokenizer's decoder (and of its parts, for a `Sequence`)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return set()
    decoder = json.loads(backend.to_str()).get("decoder") or {}
    parts = decoder.get("decoders") or [decoder]
    return {str(part.get("type")) for part in parts if isinstance(part, dict)}


class TokenBytes:
    """Maps a token id to its bytes and to the text OpenAI clients expect in `token`.

    Args:
        tokenizer: a Hugging Face tokenizer.
    """

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        kinds = _decoder_kinds(tokenizer)
        self._style = "byte_level" if "ByteLevel" in kinds else "byte_fallback" if "ByteFallback" in kinds else "text"
        # special tokens (end of turn, padding) are left out of the reply's text: they have no bytes
        self._special = set(getattr(tokenizer, "all_special_ids", ()) or ())
        added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
        self._special.update(i for i, token in added.items() if getattr(token, "special", False))

    def __call__(self, token_id: int) -> bytes | None:
        """The bytes this token adds to the reply; None for a special token, which adds nothing."""
        if token_id in self._special:
            return None
        piece = self._tokenizer.convert_ids_to_tokens(token_id)
        if isinstance(piece, str) and self._style == "byte_level":
            alphabet = _byte_level_alphabet()
            if all(c in alphabet for c in piece):
                return bytes(alphabet[c] for c in piece)
        elif isinstance(piece, str) and self._style == "byte_fallback":
            if (match := _BYTE_PIECE.fullmatch(piece)) is not None:
                return bytes([int(match.group(1), 16)])
            return piece.replace("\u2581", " ").encode("utf-8")
        return str(self._tokenizer.decode([token_id])).encode("utf-8")

    def describe(self, token_id: int) -> tuple[str, bytes | None]:
        """`(token, bytes)` as OpenAI's logprobs report them (a special token by its name, without bytes)."""
        raw = self(token_id)
        if raw is None:
            return str(self._tokenizer.decode([token_id])), None
        return token_text(raw), raw


def token_text(data: bytes) -> str:
    """Readable text of a token: its UTF-8, with bytes of an unfinished character as `\\xNN`."""
    return data.decode("utf-8", errors="backslashreplace")
