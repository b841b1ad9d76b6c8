"""Fine-tuning on the tiny model: loss on assistant tokens, LoRA/full outputs, DropBP, resume."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from verticals.finetune import FinetuneConfig, FinetuneError, finetune
from verticals.finetune.data import IGNORE, collate, read_jsonl, tokenize
from verticals.finetune.loss import columns_with_loss, lm_loss
from verticals.finetune.train import _Loop
from verticals.llm.local import LocalModel

CHATS = [{"messages": [{"role": "user", "content": f"Is fever number {i} a symptom of the flu?"},
                       {"role": "assistant", "content": "Yes." if i % 2 else "No."}]} for i in range(16)]


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in CHATS))
    return path


def fresh(tiny_model_dir: Path) -> LocalModel:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return LocalModel(tiny_model_dir)


def test_only_assistant_tokens_carry_loss(tiny_model) -> None:  # type: ignore[no-untyped-def]
    example = tokenize(CHATS[1], tiny_model.tokenizer, 512)
    labelled = [t for t, label in zip(example.input_ids, example.labels) if label != IGNORE]
    text = tiny_model.tokenizer.decode(labelled)
    assert text.startswith("Yes.") and "<|im_end|>" in text
    assert "fever" not in text


def test_a_base_model_learns_the_transcript_it_is_prompted_with(tiny_model) -> None:  # type: ignore[no-untyped-def]
    import copy

    tokenizer = copy.deepcopy(tiny_model.tokenizer)
    tokenizer.chat_template = None  # a base model (Gemma 3 270M's GGUF has none)
    example = tokenize(CHATS[1], tokenizer, 512)
    reply = [t for t, label in zip(example.input_ids, example.labels) if label != IGNORE]
    assert tokenizer.decode(reply) == "Yes." + tokenizer.eos_token
    start = next(i for i, label in enumerate(example.labels) if label != IGNORE)
    prompt = f"user: {CHATS[1]['messages'][0]['content']}\nassistant: "  # as LocalModel prompts a base model
    assert example.input_ids[:start] == tokenizer(prompt, add_special_tokens=False)["input_ids"]


def test_left_padding_puts_labels_at_the_right_edge(tiny_model) -> None:  # type: ignore[no-untyped-def]
    examples = [tokenize(r, tiny_model.tokenizer, 512) for r in (CHATS[0], {"text": "a much longer plain text " * 3})]
    batch = collate(examples, 0)
    assert batch["attention_mask"][:, -1].all()
    short = int(batch["attention_mask"][0].sum())
    assert batch["position_ids"][0, -short:].tolist() == list(range(short))
    assert columns_with_loss(batch["labels"]) == batch["labels"].shape[1]  # the text row is labelled throughout
    only_chat = collate(examples[:1] * 2, 0)
    assert columns_with_loss(only_chat["labels"]) < only_chat["labels"].shape[1] // 2


def test_selective_head_loss_equals_the_full_loss(tiny_model) -> None:  # type: ignore[no-untyped-def]
    examples = [tokenize(r, tiny_model.tokenizer, 512) for r in CHATS[:4]]
    batch = collate(examples, tiny_model.tokenizer.pad_token_id)
    loss, count = lm_loss(tiny_model.model, batch)
    logits = tiny_model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              position_ids=batch["position_ids"]).logits
    full = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                             batch["labels"][:, 1:].reshape(-1), ignore_index=IGNORE)
    assert loss.item() == pytest.approx(full.item(), rel=1e-5)
    assert count == int((batch["labels"] != IGNORE).sum())


def test_sensitivity_calibration_is_timed_into_the_log(tiny_model_dir: Path, data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "sensitive"
    config = FinetuneConfig(steps=10, batch_size=2, warmup_steps=0, save_every=10, drop_rate=0.5,
                            drop_allocation="sensitivity", probe_batches=1)
    result = finetune(fresh(tiny_model_dir), data_file, out, config, progress=False)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    timed = [e for e in log if "calibration" in e]
    assert [e["step"] for e in timed] == [2]  # calibrated before step 2 (10% of 10 steps)
    assert timed[0]["calibration"] > 0
    assert log[1]["elapsed"] == pytest.approx(log[0]["elapsed"] + log[1]["seconds"] + log[1]["calibration"])
    assert result.seconds >= log[-1]["elapsed"]
    assert result.drop_rates is not None and len(set(result.drop_rates)) > 1  # measured, not uniform


def test_lora_run_writes_an_adapter_that_changes_the_model(tiny_model_dir: Path, data_file: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "lora"
    config = FinetuneConfig(steps=6, batch_size=4, lr=5e-2, warmup_steps=0, save_every=3, drop_rate=0.5)
    result = finetune(fresh(tiny_model_dir), data_file, out, config, progress=False)
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == list(range(1, 7))
    assert log[-1]["loss"] < log[0]["loss"]
    assert result.drop_rates is not None and set(result.drop_rates) == {0.5}
    tuned, base = LocalModel(tiny_model_dir, adapter=out), fresh(tiny_model_dir)
    batch = collate([tokenize(r, base.tokenizer, 512) for r in CHATS], base.tokenizer.pad_token_id)
    with torch.no_grad():  # the adapter fits the training answers better than the base model does
        assert lm_loss(tuned.model, batch)[0].item() < lm_loss(base.model, batch)[0].item() - 0.1


def test_dropbp_that_never_drops_trains_exactly_like_rate_zero(tiny_model_dir: Path, data_file: Path,
                                                              tmp_path: Path) -> None:
    # with the hooks on and no branch ever dropped, nothing else may change: the losses match bit for bit,
    # so any difference at a real drop rate comes from the dropped backward passes alone
    logs = []
    for rate in (0.0, 1e-12):
        out = tmp_path / f"rate-{rate}"
        config = FinetuneConfig(steps=5, batch_size=4, lr=5e-2, warmup_steps=0, save_every=5, drop_rate=rate)
        finetune(fresh(tiny_model_dir), data_file, out, config, progress=False)
        logs.append([json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()])
    assert logs[0] == logs[1] and len(set(logs[0])) == 5


def test_full_run_writes_a_loadable_model(tiny_model_dir: Path, data_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "full"
    finetune(fresh(tiny_model_dir), data_file, out, FinetuneConfig(method="full", steps=2, lr=1e-3, warmup_steps=0),
             progress=False)
    assert LocalModel(out).chat("Is fever a symptom?", max_tokens=3) is not None
    assert not list(out.glob("*.bin"))


def test_resume_continues_without_repeating_steps(tiny_model_dir: Path, data_file: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    config = FinetuneConfig(steps=6, batch_size=4, lr=1e-2, warmup_steps=0, save_every=2, drop_rate=0.5)
    straight = tmp_path / "straight"
    finetune(fresh(tiny_model_dir), data_file, straight, config, progress=False)
    interrupted = tmp_path / "interrupted"
    with _killed_at_step(monkeypatch, 6), pytest.raises(KeyboardInterrupt):  # steps 1-4 checkpointed, 5 lost
        finetune(fresh(tiny_model_dir), data_file, interrupted, config, progress=False)
    with pytest.raises(FinetuneError, match="--resume"):
        finetune(fresh(tiny_model_dir), data_file, interrupted, config, progress=False)
    finetune(fresh(tiny_model_dir), data_file, interrupted, config, resume=True, progress=False)
    a = [json.loads(line) for line in (straight / "train_log.jsonl").read_text().splitlines()]
    b = [json.loads(line) for line in (interrupted / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in b] == list(range(1, 7))
    assert [e["loss"] for e in b] == pytest.approx([e["loss"] for e in a], rel=1e-4)
    assert torch.equal(_adapter(straight)["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"],
                       _adapter(interrupted)["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"])


@contextlib.contextmanager
def _killed_at_step(monkeypatch: pytest.MonkeyPatch, step: int) -> Iterator[None]:
    """Training interrupted (as by Ctrl-C) when optimizer step `step` starts; restored afterwards."""
    real_step, calls = _Loop._step, []

    def step_then_stop(self, batches):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == step:
            raise KeyboardInterrupt
        return real_step(self, batches)

    monkeypatch.setattr(_Loop, "_step", step_then_stop)
    try:
        yield
    finally:
        monkeypatch.setattr(_Loop, "_step", real_step)


def _adapter(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_bad_data_fails_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    with pytest.raises(FinetuneError, match="bad.jsonl:1"):
        read_jsonl(bad)
    bad.write_text("not json\n")
    with pytest.raises(FinetuneError, match="not JSON"):
        read_jsonl(bad)
    with pytest.raises(FinetuneError, match="not found"):
        read_jsonl(tmp_path / "missing.jsonl")
    bad.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(FinetuneError, match=r"bad.jsonl:2 is not UTF-8 text \(byte 0xe9\); save the file as UTF-8"):
        read_jsonl(bad)
    bad.write_text('{"messages": [{"role": "doctor", "content": "hi"}, {"role": "assistant", "content": "ok"}]}\n')
    with pytest.raises(FinetuneError, match="bad.jsonl:1 has a message of role 'doctor'; roles are assistant, system"):
        read_jsonl(bad)
    with pytest.raises(FinetuneError, match="method"):
        FinetuneConfig(method="qlora")


def test_a_long_conversation_loses_its_beginning_not_its_reply(tiny_model) -> None:  # type: ignore[no-untyped-def]
    long_chat = {"messages": [{"role": "user", "content": "Tell me about the flu. " * 30},
                              {"role": "assistant", "content": "Yes, fever is a common symptom."}]}
    whole = tokenize(long_chat, tiny_model.tokenizer, 10_000)
    reply = [t for t, label in zip(whole.input_ids, whole.labels) if label != IGNORE]
    assert len(whole.input_ids) > 60 and len(reply) < 30
    cut = tokenize(long_chat, tiny_model.tokenizer, 40)
    assert len(cut.input_ids) == 40 and cut.input_ids == whole.input_ids[-40:]
    assert [t for t, label in zip(cut.input_ids, cut.labels) if label != IGNORE] == reply  # the whole reply
    too_short = tokenize(long_chat, tiny_model.tokenizer, len(reply) - 1)  # not even the reply fits
    assert not too_short.has_loss and all(label == IGNORE for label in too_short.labels)


def test_examples_without_a_whole_reply_are_left_out_and_counted(tiny_model_dir: Path, tmp_path: Path) -> None:
    long_reply = {"messages": [{"role": "user", "content": "Explain."},
                               {"role": "assistant", "content": "Yes, the answer is yes. " * 40}]}
    config = FinetuneConfig(steps=2, batch_size=2, lr=1e-3, warmup_steps=0, max_length=48)
    result = finetune(fresh(tiny_model_dir), CHATS[:4] + [long_reply] * 3, tmp_path / "some", config, progress=False)
    assert result.left_out == 3 and result.final_loss > 0
    with pytest.raises(FinetuneError, match="none of the 3 examples keeps a whole reply within max_length 48"):
        finetune(fresh(tiny_model_dir), [long_reply] * 3, tmp_path / "none", config, progress=False)


def test_resume_refuses_other_settings_data_or_weights(tiny_model_dir: Path, data_file: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    config = FinetuneConfig(steps=4, batch_size=2, lr=1e-2, warmup_steps=0, save_every=2)
    out = tmp_path / "run"
    with _killed_at_step(monkeypatch, 3), pytest.raises(KeyboardInterrupt):
        finetune(fresh(tiny_model_dir), data_file, out, config, progress=False)
    saved = (out / "finetune_config.json").read_text()
    for changed, names in (({"lr": 5e-3}, "lr"), ({"batch_size": 4, "seed": 1}, "batch_size, seed"),
                           ({"drop_rate": 0.5}, "drop_rate")):
        other = FinetuneConfig(**{**config.to_dict(), **changed})
        with pytest.raises(FinetuneError, match=f"other settings \\({names} differ\\)"):
            finetune(fresh(tiny_model_dir), data_file, out, other, resume=True, progress=False)
    assert (out / "finetune_config.json").read_text() == saved  # the refused resume wrote nothing
    with pytest.raises(FinetuneError, match="the training data changed"):
        finetune(fresh(tiny_model_dir), CHATS[:3], out, config, resume=True, progress=False)
    other_weights = fresh(tiny_model_dir)
    monkeypatch.setattr(type(other_weights), "fingerprint", property(lambda self: "other"))
    with pytest.raises(FinetuneError, match="the base model's weights changed"):
        finetune(other_weights, data_file, out, config, resume=True, progress=False)
    monkeypatch.undo()
    saving = FinetuneConfig(**{**config.to_dict(), "save_every": 1})  # how often it saves changes nothing learnt
    assert finetune(fresh(tiny_model_dir), data_file, out, saving, resume=True, progress=False).steps == 4


def test_finetune_refuses_an_out_that_is_a_file_before_loading_a_model(data_file: Path, tmp_path: Path) -> None:
    from tests.test_cli import run_cli

    (tmp_path / "a-file").write_text("")
    result = run_cli("finetune", "run", str(data_file), "--out", str(tmp_path / "a-file"), tmp_path=tmp_path)
    assert result.returncode == 2 and result.stderr.startswith("error: --out ")
    assert "a-file is a file; give a folder for the run" in " ".join(result.stderr.split())


def test_a_finished_run_resumed_reports_its_last_loss_and_a_cut_log_line_is_dropped(
        tiny_model_dir: Path, data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = FinetuneConfig(steps=4, batch_size=2, lr=1e-2, warmup_steps=0, save_every=2)
    out = tmp_path / "run"
    done = finetune(fresh(tiny_model_dir), data_file, out, config, progress=False)
    again = finetune(fresh(tiny_model_dir), data_file, out, config, resume=True, progress=False)
    assert again.final_loss == pytest.approx(done.final_loss) and again.final_loss == again.final_loss  # not NaN
    killed = tmp_path / "killed"
    with _killed_at_step(monkeypatch, 4), pytest.raises(KeyboardInterrupt):  # steps 1-2 checkpointed
        finetune(fresh(tiny_model_dir), data_file, killed, config, progress=False)
    log = killed / "train_log.jsonl"
    log.write_text(log.read_text() + '{"step": 3, "lo')  # the kill cut the last line short
    finetune(fresh(tiny_model_dir), data_file, killed, config, resume=True, progress=False)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1, 2, 3, 4]



def test_a_damaged_checkpoint_is_set_aside_and_the_one_before_resumes_exactly(
        tiny_model_dir: Path, data_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = FinetuneConfig(steps=5, batch_size=2, lr=1e-2, warmup_steps=0, save_every=1)
    straight = finetune(fresh(tiny_model_dir), data_file, tmp_path / "straight", config, progress=False)
    out = tmp_path / "killed"
    with _killed_at_step(monkeypatch, 4), pytest.raises(KeyboardInterrupt):  # checkpoints of steps 2 and 3 kept
        finetune(fresh(tiny_model_dir), data_file, out, config, progress=False)
    newest = out / "checkpoints" / "step-000003" / "trainable.safetensors"
    newest.write_bytes(newest.read_bytes()[:100])  # cut short, as a full disk or a kill mid-copy leaves it
    (out / "checkpoints" / ".saving-abc123").mkdir()  # a save killed with -9
    with pytest.warns(UserWarning, match="step-000003 cannot be read .* kept as damaged-step-000003"):
        resumed = finetune(fresh(tiny_model_dir), data_file, out, config, resume=True, progress=False)
    assert resumed.final_loss == pytest.approx(straight.final_loss, rel=1e-4)  # from step 2, exactly
    assert (out / "checkpoints" / "damaged-step-000003" / "trainable.safetensors").is_file()  # kept, not deleted
    assert not list((out / "checkpoints").glob(".saving-*"))
    for step in ("step-000004", "step-000005"):
        (out / "checkpoints" / step / "trainable.safetensors").write_bytes(b"")
    (out / "checkpoints" / "step-000003").mkdir()  # an empty, incomplete folder is no checkpoint
    with pytest.warns(UserWarning), pytest.raises(FinetuneError, match="no checkpoint under .* can be read"):
        finetune(fresh(tiny_model_dir), data_file, out, config, resume=True, progress=False)


def test_a_model_tuned_in_place_is_never_served_answers_cached_before(tiny_model_dir: Path, tmp_path: Path) -> None:
    from verticals.llm import ResponseCache

    model = fresh(tiny_model_dir)
    model.cache = ResponseCache(tmp_path / "cache.sqlite")
    question = [CHATS[1]["messages"][0]["content"]]
    before, untuned = model.choice_probs(question, ["Yes.", "No."]), model.fingerprint
    config = FinetuneConfig(steps=6, batch_size=4, lr=5e-2, warmup_steps=0)
    finetune(model, CHATS, tmp_path / "tuned", config, progress=False)
    after = model.choice_probs(question, ["Yes.", "No."])
    assert model.fingerprint != untuned and abs(after[0, 0] - before[0, 0]) > 1e-3  # the tuned weights answered
    model.cache = None
    assert np.allclose(model.choice_probs(question, ["Yes.", "No."]), after)  # and what was cached is theirs
    again = fresh(tiny_model_dir)  # the same run on the same weights gets the same mark
    finetune(again, CHATS, tmp_path / "tuned-again", config, progress=False)
    assert again.fingerprint == model.fingerprint


def test_the_tuning_door_copies_weights_and_puts_adapters_on(tiny_model_dir: Path, tmp_path: Path) -> None:
    from verticals.llm import LLMError, OpenAIModel

    base = fresh(tiny_model_dir)
    copy = base.copy_for_tuning()
    assert base.tunable and copy is not base and copy.model is not base.model
    finetune(copy, CHATS, tmp_path / "tuned", FinetuneConfig(steps=4, batch_size=4, lr=5e-2, warmup_steps=0),
             progress=False)
    assert "+tuned:" in copy.fingerprint and "+tuned:" not in base.fingerprint  # the original is untouched
    on = base.with_adapter(tmp_path / "tuned")
    assert on.cache is base.cache and on.adapter == tmp_path / "tuned" and on.fingerprint != base.fingerprint
    served = OpenAIModel("http://127.0.0.1:9/v1", model="m")
    assert not served.tunable
    with pytest.raises(LLMError, match="not tunable here"):
        served.copy_for_tuning()


def test_auto_checks_fidelity_first_trains_at_its_choice_and_says_so(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = FinetuneConfig(steps=150, batch_size=4, lr=1e-3, warmup_steps=0, drop_rate="auto", probe_batches=1,
                            save_every=150, drop_min_cosine=0.9)  # long enough to repay the check here
    result = finetune(fresh(tiny_model_dir), CHATS, tmp_path / "auto", config, progress=False)
    check = json.loads((tmp_path / "auto" / "dropbp_check.json").read_text())
    chosen = check["chosen"]
    assert [r["rate"] for r in check["rates"]] == [0.125, 0.25, 0.375, 0.5, 0.625, 0.75]
    assert chosen > 0 and chosen == max(r["rate"] for r in check["rates"] if r["cosine_low"] >= 0.9)
    assert result.drop_rates == [chosen] * 4 and result.dropbp.startswith("auto: ")
    log = [json.loads(line) for line in (tmp_path / "auto" / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["calibration"] > 0 and not any("calibration" in e for e in log[1:])  # measured once, at the start


def test_auto_leaves_a_run_too_short_to_repay_its_check_without_dropbp(tiny_model_dir: Path, tmp_path: Path) -> None:
    config = FinetuneConfig(steps=3, batch_size=4, lr=1e-3, warmup_steps=0)  # auto is the default
    assert config.drop_rate == "auto"
    result = finetune(fresh(tiny_model_dir), CHATS, tmp_path / "short", config, progress=False)
    assert result.drop_rates is None and "3 steps are too few to repay the fidelity check" in result.dropbp
    assert json.loads((tmp_path / "short" / "dropbp_check.json").read_text())["chosen"] == 0.0


def test_auto_trains_a_model_dropbp_cannot_fit_without_it(tiny_model_dir: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from verticals import dropbp

    def no_branches(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise dropbp.DropBPError("cannot find decoder layers in ToyModel")

    monkeypatch.setattr(dropbp, "apply", no_branches)
    config = FinetuneConfig(steps=2, batch_size=4, lr=1e-3, warmup_steps=0)
    result = finetune(fresh(tiny_model_dir), CHATS, tmp_path / "auto", config, progress=False)
    assert result.drop_rates is None and "DropBP does not fit this model (cannot find decoder layers" in result.dropbp
    with pytest.raises(FinetuneError, match="DropBP cannot be applied to this model"):  # a rate asked for: refused
        finetune(fresh(tiny_model_dir), CHATS, tmp_path / "fixed", replace(config, drop_rate=0.5), progress=False)
