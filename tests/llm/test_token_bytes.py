"""Each token's own bytes, for the two tokenizer families that split characters: byte-level BPE
and SentencePiece with byte fallback."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers
from transformers import PreTrainedTokenizerFast

from tests.conftest import _tokenizer
from verticals.llm._token_bytes import TokenBytes, token_text

TEXTS = ["fine", "héllo wörld", "a 😊 b", "日本語のテキスト", "tab\tand\nnewline", "ﬁ"]


def byte_fallback_tokenizer() -> PreTrainedTokenizerFast:
    """A Llama-2-style tokenizer: "▁" for spaces, `<0xNN>` for bytes of characters it does not know."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for word in ["▁", "a", "b", "▁a", "▁b", "h", "e", "l", "o", "▁w", "r", "d", "f", "i", "n"]:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = None
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.mark.parametrize("text", TEXTS)
def test_byte_level_tokens_spell_the_text(text: str) -> None:
    tokenizer = _tokenizer()
    token_bytes = TokenBytes(tokenizer)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    pieces = [token_bytes(i) for i in ids]
    assert b"".join(pieces) == tokenizer.decode(ids).encode("utf-8")  # type: ignore[arg-type]


def test_a_split_emoji_keeps_its_bytes_and_reads_as_escapes() -> None:
    tokenizer = _tokenizer()
    token_bytes = TokenBytes(tokenizer)
    ids = tokenizer("😊", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1  # the tiny vocabulary has no emoji: one token per byte or so
    described = [token_bytes.describe(i) for i in ids]
    assert b"".join(raw for _, raw in described if raw) == "😊".encode()
    assert all("\ufffd" not in text and "\\x" in text for text, _ in described)


def test_special_tokens_have_a_name_and_no_bytes() -> None:
    tokenizer = _tokenizer()
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert TokenBytes(tokenizer).describe(end) == ("<|im_end|>", None)


@pytest.mark.parametrize("text", ["a b", "héllo wörld", "a 😊 b", "日本"])
def test_byte_fallback_tokens_spell_the_text(text: str) -> None:
    tokenizer = byte_fallback_tokenizer()
    token_bytes = TokenBytes(tokenizer)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    joined = b"".join(token_bytes(i) or b"" for i in ids)
    assert joined.decode("utf-8").removeprefix(" ") == text  # SentencePiece's leading "▁" is a space
    if not text.isascii():
        assert any(len(token_bytes(i) or b"") == 1 and (token_bytes(i) or b"\x00")[0] >= 0x80 for i in ids)


def test_token_text_escapes_only_what_is_not_utf8() -> None:
    assert token_text(b" caf\xc3\xa9") == " café"
    assert token_text(b" \xf0\x9f\x98") == " \\xf0\\x9f\\x98"
