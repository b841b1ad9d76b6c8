"""Message validation at the door: `as_messages`, `text_of`, `image_part`."""

from __future__ import annotations

import base64

import pytest

from verticals.llm.errors import LLMError
from verticals.llm.messages import as_messages, image_part, text_of


def test_string_is_one_user_message() -> None:
    assert as_messages("Is fever a symptom?") == [{"role": "user", "content": "Is fever a symptom?"}]


def test_message_list_is_validated_and_copied() -> None:
    original = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                {"role": "assistant", "content": "Hello"}]
    result = as_messages(original)
    assert result == original
    result[0]["content"] = "changed"
    assert original[0]["content"] == "Be brief."


def test_tuple_of_messages_is_accepted() -> None:
    assert as_messages(({"role": "user", "content": "hi"},)) == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("prompt", [
    "",
    "   \n",
    [],
    [{"role": "robot", "content": "hi"}],
    [{"role": "user"}],
    [{"content": "hi"}],
    ["hi"],
    [{"role": "user", "content": 42}],
    [{"role": "user", "content": [{"type": "text"}]}],
    [{"role": "user", "content": [{"type": "text", "text": 3}]}],
    [{"role": "user", "content": [{"type": "image_url", "image_url": "data:x"}]}],
    [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
    [{"role": "user", "content": [{"type": "audio", "audio": "x"}]}],
    [{"role": "user", "content": ["plain string part"]}],
    [{"role": "user", "content": "ok"}, {"role": "tool", "content": "bad"}],
], ids=lambda p: repr(p)[:40])
def test_bad_prompts_raise(prompt) -> None:
    with pytest.raises(LLMError):
        as_messages(prompt)


def test_unknown_role_message_names_the_role_and_index() -> None:
    with pytest.raises(LLMError, match=r"message 1 has role 'robot'"):
        as_messages([{"role": "user", "content": "hi"}, {"role": "robot", "content": "beep"}])


def test_llm_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        as_messages("")


def test_text_of_string_and_parts() -> None:
    assert text_of({"role": "user", "content": "plain"}) == "plain"
    parts = [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    assert text_of({"role": "user", "content": parts}) == "one\ntwo"


def test_text_of_refuses_images() -> None:
    message = {"role": "user", "content": [{"type": "text", "text": "look"}, image_part(b"\x89PNG")]}
    with pytest.raises(LLMError, match="text only"):
        text_of(message)


def _decoded(part: dict) -> tuple[str, bytes]:
    url = part["image_url"]["url"]
    header, data = url.split(",", 1)
    assert header.startswith("data:") and header.endswith(";base64")
    return header[len("data:") : -len(";base64")], base64.b64decode(data)


def test_image_part_from_bytes() -> None:
    part = image_part(b"\x00\x01raw")
    assert part["type"] == "image_url"
    assert _decoded(part) == ("image/png", b"\x00\x01raw")
    assert _decoded(image_part(b"abc", mime="image/webp")) == ("image/webp", b"abc")
    # the part passes validation as message content
    assert as_messages([{"role": "user", "content": [part]}])[0]["content"] == [part]


@pytest.mark.parametrize(("name", "mime"), [("photo.jpg", "image/jpeg"), ("scan.png", "image/png"),
                                            ("noext", "image/png")])
def test_image_part_from_file(tmp_path, name, mime) -> None:
    path = tmp_path / name
    path.write_bytes(b"\xff\xd8\xffpicture")
    assert _decoded(image_part(path)) == (mime, b"\xff\xd8\xffpicture")
    assert _decoded(image_part(str(path))) == (mime, b"\xff\xd8\xffpicture")


def test_image_part_missing_file_raises(tmp_path) -> None:
    missing = tmp_path / "nope.png"
    with pytest.raises(LLMError, match="nope.png"):
        image_part(missing)
    with pytest.raises(LLMError):
        image_part(tmp_path)  # a folder is not an image file
