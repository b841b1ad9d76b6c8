"""`LocalModel` on a tiny random Llama: scoring through the base class and its cache, generation,
stop strings, the text assembler, load errors and a real LoRA adapter."""

from __future__ import annotations

import re
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from verticals.llm import local
from verticals.llm._decode import TextAssembler, decode
from verticals.llm.base import GenerationParams
from verticals.llm.cache import ResponseCache
from verticals.llm.errors import LLMError, ModelLoadError
from verticals.llm.local import LocalModel
from verticals.llm.messages import as_messages

PROMPTS = ["Is fever a symptom of the flu? Answer yes or no.", "Hi",
           [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Is it sunny?"}],
           "Does the patient need more information about the treatment and its side effects?"]
CHOICES = ["Yes", "No", "maybe later"]
STORY = "Tell me a story about the weather."


# -- choice_probs through the base class ---------------------------------------------------------
def test_choice_probs_shape_and_rows_sum_to_one(tiny_model) -> None:
    probs = tiny_model.choice_probs(PROMPTS, CHOICES)
    assert probs.shape == (4, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    assert (probs > 0).all()
    assert np.ptp(probs[:, 0]) > 1e-4  # the prompt matters


def test_choice_probs_follow_prompt_order(tiny_model) -> None:
    together = tiny_model.choice_probs(PROMPTS, CHOICES)
    alone = np.vstack([tiny_model.choice_probs([p], CHOICES) for p in PROMPTS])
    np.testing.assert_allclose(together, alone, atol=1e-6)
    reversed_ = tiny_model.choice_probs(PROMPTS[::-1], CHOICES)
    np.testing.assert_allclose(reversed_, together[::-1], atol=1e-6)


def _spy(model, monkeypatch) -> list[int]:
    calls: list[int] = []
    original = model._choice_logprobs

    def spy(prompts, choices):
        calls.append(len(prompts))
        return original(prompts, choices)

    monkeypatch.setattr(model, "_choice_logprobs", spy)
    return calls


def test_choice_probs_second_call_is_served_from_cache(tiny_model, tmp_path, monkeypatch) -> None:
    uncached = tiny_model.choice_probs(PROMPTS, CHOICES)
    monkeypatch.setattr(tiny_model, "cache", ResponseCache(tmp_path / "c.sqlite"))
    first = tiny_model.choice_probs(PROMPTS, CHOICES)
    assert len(tiny_model.cache) == len(PROMPTS)
    np.testing.assert_allclose(first, uncached, atol=1e-12)

    def boom(*args, **kwargs):
        raise AssertionError("the backend was called for cached prompts")

    monkeypatch.setattr(tiny_model, "_choice_logprobs", boom)
    np.testing.assert_array_equal(tiny_model.choice_probs(PROMPTS, CHOICES), first)
    monkeypatch.setattr(tiny_model, "cache", ResponseCache(tmp_path / "c.sqlite"))  # reopened file
    np.testing.assert_array_equal(tiny_model.choice_probs(PROMPTS, CHOICES), first)
    with pytest.raises(AssertionError, match="backend was called"):  # other options: another key
        tiny_model.choice_probs(PROMPTS, CHOICES[::-1])


def test_partially_cached_list_sends_only_misses(tiny_model, tmp_path, monkeypatch) -> None:
    full = tiny_model.choice_probs(PROMPTS, CHOICES)
    monkeypatch.setattr(tiny_model, "cache", ResponseCache(tmp_path / "c.sqlite"))
    tiny_model.choice_probs([PROMPTS[1], PROMPTS[3]], CHOICES)
    calls = _spy(tiny_model, monkeypatch)
    probs = tiny_model.choice_probs(PROMPTS, CHOICES)
    assert calls == [2]
    np.testing.assert_allclose(probs, full, atol=1e-6)


def test_a_prompt_asked_twice_is_computed_once_and_answered_alike(tiny_model, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tiny_model, "cache", ResponseCache(tmp_path / "c.sqlite"))
    calls = _spy(tiny_model, monkeypatch)
    asked = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[2], PROMPTS[0]]
    first = tiny_model.choice_probs(asked, CHOICES)
    assert calls == [3]  # three different prompts
    np.testing.assert_array_equal(first[0], first[2])
    np.testing.assert_array_equal(first[0], first[4])
    # the rerun, all from the cache, gives exactly what the first run gave
    np.testing.assert_array_equal(tiny_model.choice_probs(asked, CHOICES), first)
    assert calls == [3]


def test_scoring_is_chunked(tiny_model, monkeypatch) -> None:
    monkeypatch.setattr(tiny_model, "scoring_chunk_size", 3)
    calls = _spy(tiny_model, monkeypatch)
    tiny_model.choice_probs(PROMPTS + ["One more?", "And another?", "The last one?"], CHOICES, progress=True)
    assert calls == [3, 3, 1]


@pytest.mark.parametrize(("prompts", "choices", "match"), [
    ([], CHOICES, "no prompts"),
    (PROMPTS, ["Yes"], "at least two"),
    (PROMPTS, "Yes", "list of options"),
    (PROMPTS, ["Yes", "Yes"], "distinct"),
    (PROMPTS, ["Yes", ""], "non-empty"),
    (PROMPTS, ["Yes", "  "], "non-empty"),
    (PROMPTS, ["ﬁne", "fine"], "same tokens"),  # NFKC makes the ligature the same tokens
    ([""], CHOICES, "empty"),
])
def test_choice_probs_errors(tiny_model, prompts, choices, match) -> None:
    with pytest.raises(LLMError, match=match):
        tiny_model.choice_probs(prompts, choices)


# -- generation -----------------------------------------------------------------------------------
def test_greedy_chat_is_deterministic_and_streams_the_same(tiny_model) -> None:
    first = tiny_model.chat(STORY, max_tokens=30)
    assert first and first == tiny_model.chat(STORY, max_tokens=30)
    pieces = list(tiny_model.stream(STORY, max_tokens=30))
    assert len(pieces) > 1 and all(pieces)
    assert "".join(pieces) == first
    assert tiny_model.chat(STORY, max_tokens=30, temperature=1.0, top_p=1e-9, seed=5) == first


def test_max_tokens_and_finish_reason_length(tiny_model) -> None:
    tokens = list(tiny_model.generate(as_messages(STORY), GenerationParams(max_tokens=7), top_logprobs=3))
    assert len(tokens) == 7
    assert [t.finish_reason for t in tokens] == [None] * 6 + ["length"]
    assert all(t.logprob <= 0 and len(t.top) == 3 for t in tokens)
    assert all(t.logprob == pytest.approx(t.top[0].logprob) for t in tokens)  # greedy takes the top token
    longer = tiny_model.chat(STORY, max_tokens=20)
    assert longer.startswith("".join(t.text for t in tokens))


def test_eos_token_ends_with_finish_reason_stop(tiny_model, monkeypatch) -> None:
    ids = [s.token_id for s in decode(tiny_model.model, tiny_model.prompt_ids(STORY), max_tokens=8, temperature=0,
                                      top_p=1, seed=None, eos_ids=set())]
    k = next(i for i in range(3, 8) if ids[i] not in ids[:i])
    monkeypatch.setattr(tiny_model, "eos_ids", {ids[k]})
    tokens = list(tiny_model.generate(as_messages(STORY), GenerationParams(max_tokens=20)))
    # the end-of-turn token ends the reply without being part of it
    assert len(tokens) == k and tokens[-1].finish_reason == "stop"
    assert [t.finish_reason for t in tokens[:-1]] == [None] * (k - 1)
    assert "".join(t.text for t in tokens) == tiny_model.tokenizer.decode(ids[:k], skip_special_tokens=True)


def test_an_immediate_end_of_turn_yields_no_token(tiny_model, monkeypatch) -> None:
    first = next(decode(tiny_model.model, tiny_model.prompt_ids(STORY), max_tokens=1, temperature=0, top_p=1,
                        seed=None, eos_ids=set())).token_id
    monkeypatch.setattr(tiny_model, "eos_ids", {first})
    assert list(tiny_model.generate(as_messages(STORY), GenerationParams(max_tokens=5))) == []
    assert tiny_model.chat(STORY, max_tokens=5) == ""


def test_seeded_sampling_is_reproducible_and_leaves_global_rng(tiny_model) -> None:
    state = torch.random.get_rng_state()
    first = tiny_model.chat(STORY, max_tokens=20, temperature=1.0, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert tiny_model.chat(STORY, max_tokens=20, temperature=1.0, seed=3) == first
    assert tiny_model.chat(STORY, max_tokens=20, temperature=1.0, seed=4) != first
    assert torch.equal(torch.random.get_rng_state(), state)


def test_stop_string_cuts_the_reply(tiny_model) -> None:
    full = tiny_model.chat(STORY, max_tokens=40)
    middle = (full[i : i + 2] for i in range(len(full) // 2, len(full) - 2))
    stop = next(s for s in middle if s.isascii() and s.isalpha())
    expected = full[: full.index(stop)]
    assert 0 < len(expected) < len(full)
    assert tiny_model.chat(STORY, max_tokens=40, stop=[stop]) == expected
    assert "".join(tiny_model.stream(STORY, max_tokens=40, stop=[stop, "never-said"])) == expected
    tokens = list(tiny_model.generate(as_messages(STORY), GenerationParams(max_tokens=40, stop=(stop,))))
    assert tokens[-1].finish_reason == "stop" and len(tokens) < 40


@pytest.mark.parametrize("stop_length", [1, 2, 5])
def test_the_tokens_of_a_cut_reply_spell_what_is_left(tiny_model, stop_length: int) -> None:
    full = list(tiny_model.generate(as_messages(STORY), GenerationParams(max_tokens=40)))
    text = "".join(t.text for t in full)
    for at in range(2, len(text) - stop_length, 3):  # stop strings starting anywhere, inside tokens or at their edges
        stop = text[at : at + stop_length]
        expected = text[: text.index(stop)]
        tokens = list(tiny_model.generate(as_messages(STORY), GenerationParams(max_tokens=40, stop=(stop,))))
        assert "".join(t.text for t in tokens) == expected
        if not tokens:
            assert expected == ""
            continue
        # every token holds some of what is left; only the last may reach into the stop string
        spelled = [b"".join(t.bytes or b"" for t in tokens[:k]).decode("utf-8", errors="replace")
                   for k in (len(tokens) - 1, len(tokens))]
        assert len(spelled[0]) < len(expected) and spelled[1].startswith(expected)
        assert tokens[-1].finish_reason == "stop"


def test_a_stop_string_at_the_very_start_leaves_no_token(tiny_model) -> None:
    first = tiny_model.chat(STORY, max_tokens=3)[:1]
    assert list(tiny_model.generate(as_messages(STORY), GenerationParams(max_tokens=40, stop=(first,)))) == []


def test_chat_cache_only_for_greedy(tiny_model, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tiny_model, "cache", ResponseCache(tmp_path / "c.sqlite"))
    reply = tiny_model.chat(STORY, max_tokens=10)
    tiny_model.chat(STORY, max_tokens=10, temperature=0.7, seed=1)
    assert len(tiny_model.cache) == 1
    monkeypatch.setattr(tiny_model, "_stream", lambda *a: iter(["not", "cached"]))
    assert tiny_model.chat(STORY, max_tokens=10) == reply
    assert list(tiny_model.stream(STORY, max_tokens=10)) == [reply]
    assert tiny_model.chat(STORY, max_tokens=11) == "notcached"


# -- TextAssembler with a fake detokenizer ---------------------------------------------------------
PIECES = [b"Hel", b"lo", b" wor", b"ld", b"ST", b"OP", b"\xc3", b"\xa9", b"!", b"S", b"xyzSTOP tail"]


@pytest.mark.parametrize(("stop", "ids", "pieces", "flushed", "stopped"), [
    ((), [0, 1, 2, 3], ["Hel", "lo", " wor", "ld"], "", False),           # nothing held without stops
    (("STOP",), [0, 1, 2, 4, 5], ["", "He", "llo ", "wo", "r"], "", True),  # 3 characters held, then cut
    (("STOP",), [0, 1, 9, 8], ["", "He", "l", "l"], "oS!", False),         # a partial stop is flushed
    (("STOP", "OP"), [0, 4, 5], ["", "He", "l"], "", True),                # several stops: cut at the first
    (("OP", "STOP"), [0, 4, 5], ["", "He", "l"], "", True),                # ... the earliest, in any order
    (("STOP",), [0, 10], ["", "Helxyz"], "", True),                        # stop inside one token
    ((), [0, 6, 7, 8], ["Hel", "", "é", "!"], "", False),                  # U+FFFD: wait for the next byte
    ((), [0, 6], ["Hel", ""], "", False),                                  # a dangling partial is dropped
], ids=["no-stop", "held-then-cut", "partial-flushed", "two-stops", "two-stops-other-order", "stop-in-one-token",
        "split-utf8", "dangling-utf8"])
def test_text_assembler(stop, ids, pieces, flushed, stopped) -> None:
    asm = TextAssembler(lambda ids: b"".join(PIECES[i] for i in ids).decode("utf-8", errors="replace"), stop)
    got = []
    for i in ids:
        got.append(asm.add(i))
        if asm.stopped:
            break
    assert got == pieces
    assert asm.stopped is stopped
    assert asm.flush() == flushed


# -- loading --------------------------------------------------------------------------------------
def _copy_without(src, dst, *skip):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*skip))
    return dst


def test_load_errors(tiny_model_dir, tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="config.json"):
        LocalModel(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="config.json"):
        LocalModel(tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="safetensors"):
        LocalModel(_copy_without(tiny_model_dir, tmp_path / "no-weights", "*.safetensors"))
    garbage = _copy_without(tiny_model_dir, tmp_path / "garbage")
    (garbage / "model.safetensors").write_bytes(b"\x07garbage, not a safetensors header" * 50)
    truncated = _copy_without(tiny_model_dir, tmp_path / "truncated")
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    for folder in (garbage, truncated):
        with pytest.raises(ModelLoadError, match=re.escape(f"cannot load the model in {folder}")):
            LocalModel(folder)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"dtype": "float64"}, "dtype"),
    ({"device": "tpu-please"}, "device"),
    ({"device": "cpu:x"}, "device"),
    ({"max_batch_tokens": 0}, "max_batch_tokens"),
])
def test_bad_options(tiny_model_dir, kwargs, match) -> None:
    with pytest.raises(LLMError, match=match):
        LocalModel(tiny_model_dir, **kwargs)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_adapter_folder_without_weights(tiny_model_dir, lora_dir, tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="adapter"):
        LocalModel(tiny_model_dir, adapter=_copy_without(lora_dir, tmp_path / "a", "adapter_model.safetensors"))
    with pytest.raises(ModelLoadError, match="adapter"):
        LocalModel(tiny_model_dir, adapter=tmp_path / "nothing-here")
    garbage = _copy_without(lora_dir, tmp_path / "g")
    (garbage / "adapter_model.safetensors").write_bytes(b"\x07garbage" * 40)
    with pytest.raises(ModelLoadError, match="cannot load the adapter"):
        LocalModel(tiny_model_dir, adapter=garbage)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_lora_adapter_changes_answers_and_fingerprint(tiny_model, tiny_model_dir, lora_dir) -> None:
    assert (lora_dir / "adapter_model.safetensors").is_file()
    adapted = LocalModel(tiny_model_dir, adapter=lora_dir)
    with_adapter = adapted.choice_probs(PROMPTS, CHOICES)
    without = tiny_model.choice_probs(PROMPTS, CHOICES)
    assert np.abs(with_adapter - without).max() > 1e-3
    np.testing.assert_allclose(with_adapter.sum(axis=1), 1.0)
    assert adapted.fingerprint != tiny_model.fingerprint
    assert LocalModel(tiny_model_dir).fingerprint == tiny_model.fingerprint
    assert LocalModel(tiny_model_dir, dtype="bfloat16").fingerprint != tiny_model.fingerprint


@pytest.mark.parametrize("name", ["config.json", "adapter"])
def test_json_that_is_not_an_object_is_a_load_error(name, tiny_model_dir, tmp_path) -> None:  # type: ignore[no-untyped-def]
    folder = _copy_without(tiny_model_dir, tmp_path / "model")
    adapter = None
    if name == "config.json":
        (folder / "config.json").write_text("[1, 2]")
    else:
        adapter = tmp_path / "adapter"
        adapter.mkdir()
        (adapter / "adapter_config.json").write_text("[1, 2]")
        (adapter / "adapter_model.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError):
        LocalModel(folder, adapter=adapter)


def test_a_lazy_model_checks_files_at_once_and_loads_only_for_work_not_in_the_cache(tiny_model_dir, tmp_path,
                                                                                   monkeypatch) -> None:
    with pytest.raises(ModelLoadError, match="config.json"):
        LocalModel(tmp_path / "missing", lazy=True)
    with pytest.raises(ModelLoadError, match="adapter"):
        LocalModel(tiny_model_dir, adapter=tmp_path / "nothing-here", lazy=True)
    cache = ResponseCache(tmp_path / "cache.sqlite")
    eager = LocalModel(tiny_model_dir, cache=cache)
    reply = eager.chat(STORY, max_tokens=5)
    uncached = LocalModel(tiny_model_dir).chat("Hi", max_tokens=5)
    loads = []
    real_load = local._load
    monkeypatch.setattr(local, "_load", lambda *args: (loads.append(1), real_load(*args))[1])
    lazy = LocalModel(tiny_model_dir, cache=cache, lazy=True)
    assert lazy.fingerprint == eager.fingerprint
    assert lazy.chat(STORY, max_tokens=5) == reply  # served from the cache: nothing loaded
    assert not loads
    assert lazy.chat("Hi", max_tokens=5) == uncached  # not cached: loads once, same answer
    assert lazy.context_length == 512 and len(loads) == 1
    # threads that first use a lazy model together load it once
    loads.clear()
    fresh = LocalModel(tiny_model_dir, lazy=True)
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: fresh.chat("Hi", max_tokens=5), range(4)))
    assert replies == [uncached] * 4 and len(loads) == 1
