"""The fine-tuning loop: LoRA or full, DropBP built in, Accelerate-ready, resumable.

Run as is on one CPU or GPU, or under `accelerate launch` / `torchrun` (DDP; gloo on CPU) unchanged:
every rank draws the same DropBP masks, and DDP is told that a step may leave parameters unused.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from verticals import dropbp
from verticals.finetune.checkpoint import latest_checkpoint, restore, save_checkpoint
from verticals.finetune.config import CONFIG_NAME, FinetuneConfig, FinetuneError
from verticals.finetune.data import Example, collate, read_jsonl, tokenize
from verticals.finetune.loss import lm_loss
from verticals.progress import progress_bar

LOG_NAME = "train_log.jsonl"


@dataclass
class FinetuneResult:
    """What a run produced: where, how far, and how the loss ended."""

    output_dir: Path
    steps: int
    final_loss: float
    seconds: float
    drop_rates: list[float] | None
    left_out: int = 0  # conversations whose last reply did not fit in max_length (no loss tokens)
    dropbp: str = ""  # drop_rate="auto": what it measured and chose, in words


def finetune(model: Any, data: str | Path | list[dict[str, Any]], output_dir: str | Path,
             config: FinetuneConfig | None = None, *, resume: bool = False, progress: bool = True) -> FinetuneResult:
    """Fine-tune `model` (a `LocalModel`) on chat or text examples; write a model `LocalModel` can load.

    LoRA runs write a peft adapter (`LocalModel(base, adapter=output_dir)`); full runs write a whole
    model folder (`LocalModel(output_dir)`). Checkpoints go to `output_dir/checkpoints`; with
    `resume=True` a run continues after its last checkpoint without repeating finished steps.

    Raises:
        FinetuneError: bad data, an output folder holding another run, or a checkpoint that does not fit.
    """
    config = config or FinetuneConfig()
    out = Path(output_dir)
    records = data if isinstance(data, list) else read_jsonl(data)
    checkpoints = out / "checkpoints"
    found = latest_checkpoint(checkpoints)
    if found is not None and not resume:
        raise FinetuneError(f"{out} already holds a run (last checkpoint {found.name}); "
                            "pass --resume to continue it or choose another output folder")
    inputs = {"data": _data_fingerprint(records), "model": str(getattr(model, "fingerprint", ""))}
    if found is not None:
        _refuse_changes(out, config, inputs)
    tokenizer = model.tokenizer
    examples = [tokenize(r, tokenizer, config.max_length) for r in records]
    kept = [e for e in examples if e.has_loss]
    if not kept:
        raise FinetuneError(f"none of the {len(examples)} examples keeps a whole reply within max_length "
                            f"{config.max_length} tokens (nothing would carry loss): raise --max-length")
    left_out, examples = len(examples) - len(kept), kept
    model.mark_tuned(f"in progress {uuid.uuid4().hex}")  # from here on the weights in memory change
    accelerator = _accelerator(model.model, unused_parameters=config.drop_rate != 0)
    network = trainable(model.model, config)
    controller, off = _apply_dropbp(network, config)
    optimizer = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], lr=config.lr,
                                  weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))
    start = 0
    if found is not None:
        state = restore(checkpoints, network, optimizer, scheduler)
        start = int(state["step"])
        if controller is not None and state.get("dropbp"):
            controller.load_state_dict(state["dropbp"])
    wrapped, optimizer = accelerator.prepare(network, optimizer)
    if accelerator.is_main_process:  # the only rank that writes
        out.mkdir(parents=True, exist_ok=True)
        config.save(out)
        if off and found is None:
            write_check(out, {"chosen": 0.0, "reason": off})
        (out / INPUTS_NAME).write_text(json.dumps(inputs, indent=2, sort_keys=True) + "\n")
    loop = _Loop(config, accelerator, wrapped, network, optimizer, scheduler, controller, examples,
                 tokenizer.pad_token_id or 0, out)
    devices = [accelerator.device] if accelerator.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # dropout draws from the run's seed; the caller's RNG is kept
        torch.manual_seed(config.seed)
        if found is not None:
            torch.random.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
        result = loop.run(start, progress)
    if controller is not None:
        controller.remove()
    if accelerator.is_main_process:
        _export(network, tokenizer, out)
    accelerator.wait_for_everyone()
    model.mark_tuned(_weights_digest(out))  # the same run gives the same mark: its answers can be cached
    return replace(result, left_out=left_out, dropbp=auto_verdict(out) if config.drop_rate == "auto" else "")


def _weights_digest(out: Path) -> str:
    """The exported weights' digest; a rank that cannot see them (another node, no shared disk) gets a
    mark of its own, so its cache never mixes with another run's."""
    files = sorted(out.glob("*.safetensors"))
    if not files:
        return f"unseen {uuid.uuid4().hex}"
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:24]


#: what `drop_rate="auto"` measured and chose (or why it did not measure), beside the run
CHECK_NAME = "dropbp_check.json"


def write_check(out: Path, check: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / CHECK_NAME).write_text(json.dumps(check, indent=2) + "\n")


def auto_verdict(out: Path) -> str:
    """`auto`'s choice in words, read back from the run folder ("" when the run did not use auto)."""
    file = out / CHECK_NAME
    if not file.is_file():
        return ""
    check = json.loads(file.read_text())
    if "reason" in check:
        return f"auto: {check['reason']}"
    return dropbp.Fidelity.from_dict(check).verdict()


#: what a run was trained on: a resumed run must be trained on the same
INPUTS_NAME = "finetune_inputs.json"
#: settings a resumed run may change: they do not change what is learnt
_FREE_ON_RESUME = ("save_every",)


def _data_fingerprint(records: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(records, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def _refuse_changes(out: Path, config: FinetuneConfig, inputs: dict[str, str]) -> None:
    """A resumed run continues the same run: other settings, data or base weights are refused."""
    saved = out / CONFIG_NAME
    if saved.is_file():
        before, now = json.loads(saved.read_text()), json.loads(json.dumps(config.to_dict()))
        changed = sorted(k for k in set(before) | set(now) if k not in _FREE_ON_RESUME and before.get(k) != now.get(k))
        if changed:
            raise FinetuneError(f"{out} holds a run with other settings ({', '.join(changed)} differ): resume with "
                                "the same settings, or choose another output folder")
    recorded = out / INPUTS_NAME
    if recorded.is_file():
        before = json.loads(recorded.read_text())
        words = {"data": "the training data", "model": "the base model's weights"}
        changed = [words[k] for k in inputs if before.get(k) != inputs[k]]
        if changed:
            raise FinetuneError(f"{out} holds a run on other inputs ({' and '.join(changed)} changed): resume with "
                                "the same inputs, or choose another output folder")


def _accelerator(network: nn.Module, *, unused_parameters: bool) -> Any:
    """An `Accelerator` on the model's device; under torchrun on CPU, one gloo world of all ranks.

    Accelerate joins the ranks of a launcher into a CPU world only when told `cpu=True` (or
    `ACCELERATE_USE_CPU=1`); without it each rank on a machine without a GPU trains alone.

    Raises:
        FinetuneError: launched as several processes that still did not form one world.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    on_cpu = all(p.device.type == "cpu" for p in network.parameters())
    accelerator = Accelerator(cpu=on_cpu, kwargs_handlers=[DistributedDataParallelKwargs(
        find_unused_parameters=unused_parameters)])
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if accelerator.num_processes != launched:
        raise FinetuneError(f"launched as {launched} processes (WORLD_SIZE) but Accelerate formed a world of "
                            f"{accelerator.num_processes} on {accelerator.device}; to train on CPU launch with "
                            "ACCELERATE_USE_CPU=1, or run a single process")
    return accelerator


def trainable(network: nn.Module, config: FinetuneConfig) -> nn.Module:
    """`network` as `finetune` trains it: LoRA adapters per `config` (from its seed), or every weight for a full
    run; in training mode. For measuring what a run would do (benchmarks, DropBP checks) without running it."""
    network.train()
    if config.method == "full":
        for parameter in network.parameters():
            parameter.requires_grad_(True)
        return network
    from peft import LoraConfig, get_peft_model

    names = {name.rsplit(".", 1)[-1] for name, _ in network.named_modules()}
    targets = [t for t in config.lora_targets if t in names]
    if not targets:
        raise FinetuneError(f"none of the LoRA targets {list(config.lora_targets)} is a module of this model")
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM")
    with torch.random.fork_rng(devices=[]):  # adapter initialisation from the run's seed, global RNG untouched
        torch.manual_seed(config.seed)
        return get_peft_model(network, lora)


def _apply_dropbp(network: nn.Module, config: FinetuneConfig) -> tuple[dropbp.DropBP | None, str]:
    """The DropBP controller (None: off), and why `auto` turned it off ("" otherwise)."""
    if config.drop_rate == 0:
        return None, ""
    try:
        controller = dropbp.apply(network, drop_rate=config.drop_rate, allocation=config.drop_allocation,
                                  schedule=config.drop_schedule, warmup_steps=config.drop_warmup_steps,
                                  seq_len=config.max_length, seed=config.seed, min_cosine=config.drop_min_cosine)
    except dropbp.DropBPError as err:
        if config.drop_rate != "auto":
            raise FinetuneError(f"DropBP cannot be applied to this model: {err}") from None
        return None, f"DropBP does not fit this model ({err}): off"  # asked for nothing in particular
    if controller.config.auto and not repays_its_check(controller, config):
        controller.remove()
        return None, (f"{config.steps} steps are too few to repay the fidelity check even at the lowest rate "
                      "(docs/dropbp.md): DropBP off")
    return controller, ""


def repays_its_check(controller: dropbp.DropBP, config: FinetuneConfig) -> bool:
    """Whether `auto` is sure to save more passes than its fidelity check costs should any rate pass: at the
    lowest rate of the grid a run of `steps` saves steps x (1 - 1 / speed-up) passes; the check costs
    (1 + rates) per probe batch. A shorter run trains without DropBP (it might have paid off at a higher
    rate, but the check cannot know before it runs), and says so in `dropbp_check.json`."""
    low = controller.predicted_speedup(min(dropbp.GRID))
    saved = config.steps * config.grad_accum * (1 - 1 / low)
    return saved > config.probe_batches * (1 + len(dropbp.GRID))


def _lr_lambda(config: FinetuneConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / (config.warmup_steps + 1)
        return max(0.0, (config.steps - step) / max(1, config.steps - config.warmup_steps))

    return factor


def micro_batches(examples: list[Example], config: FinetuneConfig, start: int, rank: int = 0,
                  world: int = 1) -> Iterator[list[Example]]:
    """Micro-batches in a seeded order per epoch, from global micro-batch `start` on (for resuming)."""
    per_epoch = max(1, len(examples) // (config.batch_size * world))
    index = start
    while True:
        epoch, offset = divmod(index, per_epoch)
        order = np.random.default_rng([config.seed, epoch]).permutation(len(examples))
        first = (offset * world + rank) * config.batch_size
        yield [examples[i] for i in order[first : first + config.batch_size]]
        index += 1


class _Loop:
    """One run's moving parts, so each phase (calibrate, step, save) is a short method."""

    def __init__(self, config: FinetuneConfig, accelerator: Any, wrapped: nn.Module, network: nn.Module,
                 optimizer: Any, scheduler: Any, controller: dropbp.DropBP | None, examples: list[Example],
                 pad_id: int, out: Path) -> None:
        self.config, self.accelerator, self.wrapped, self.network = config, accelerator, wrapped, network
        self.optimizer, self.scheduler, self.controller = optimizer, scheduler, controller
        self.examples, self.pad_id, self.out = examples, pad_id, out
        self.calibrate_at = max(1, int(0.1 * config.steps)) if config.drop_allocation == "sensitivity" else None
        if controller is not None and controller.config.auto:
            self.calibrate_at = 0  # auto drops nothing until its check has chosen a rate

    def run(self, start: int, progress: bool) -> FinetuneResult:
        config, begun = self.config, time.perf_counter()
        batches = micro_batches(self.examples, config, start * config.grad_accum, self.accelerator.process_index,
                                self.accelerator.num_processes)
        log = _Log(self.out / LOG_NAME, start, self.accelerator.is_main_process)
        loss = math.nan
        with progress_bar("fine-tuning", config.steps, enabled=progress and self.accelerator.is_main_process) as bar:
            bar(start)
            for step in range(start, config.steps):
                calibration = 0.0
                if step == self.calibrate_at and self.controller is not None and not self._calibrated():
                    bar(0, note="checking DropBP's gradient at each drop rate" if self.controller.config.auto
                        else f"measuring the sensitivity of {len(self.controller.branches)} branches")
                    calibration = self._calibrate()
                    if self.controller.fidelity is not None and self.accelerator.is_main_process:
                        write_check(self.out, self.controller.fidelity.to_dict())
                        bar(0, note=self.controller.fidelity.verdict())
                loss, tokens, seconds = self._step(batches)
                log.write(step + 1, loss, tokens, seconds, calibration)
                bar(1, loss=f"{loss:.4f}", tok_s=f"{tokens / seconds:,.0f}")
                if (step + 1) % config.save_every == 0 or step + 1 == config.steps:
                    self._save(step + 1)
        if start >= config.steps:  # a finished run, resumed: nothing to train
            loss = log.last_loss
        rates = None if self.controller is None else self.controller.rates.tolist()
        return FinetuneResult(self.out, config.steps, loss, time.perf_counter() - begun, rates)

    def _step(self, batches: Iterator[list[Example]]) -> tuple[float, int, float]:
        begun, total, tokens = time.perf_counter(), 0.0, 0
        device = self.accelerator.device
        for micro in range(self.config.grad_accum):
            batch = {k: v.to(device) for k, v in collate(next(batches), self.pad_id).items()}
            tokens += int(batch["attention_mask"].sum())
            syncing = micro == self.config.grad_accum - 1
            with self.accelerator.no_sync(self.wrapped) if not syncing else nullcontext():
                loss, _ = lm_loss(self.wrapped, batch)
                if loss.requires_grad:  # False only when DropBP dropped every branch of a LoRA model
                    self.accelerator.backward(loss / self.config.grad_accum)
            total += float(loss.detach()) / self.config.grad_accum
        self.accelerator.clip_grad_norm_([p for p in self.network.parameters() if p.requires_grad], 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.controller is not None:
            self.controller.step()
        return total, tokens, time.perf_counter() - begun

    def _calibrated(self) -> bool:
        assert self.controller is not None
        if self.controller.config.auto:
            return self.controller.fidelity is not None
        return self.controller.sensitivities is not None

    def _calibrate(self) -> float:
        """Measure branch sensitivities on probe batches and set the drop rates; returns the seconds it took."""
        assert self.controller is not None
        begun = time.perf_counter()
        probes = micro_batches(self.examples, self.config, 0, self.accelerator.process_index,
                               self.accelerator.num_processes)
        device = self.accelerator.device
        batches = [{k: v.to(device) for k, v in collate(next(probes), self.pad_id).items()}
                   for _ in range(self.config.probe_batches)]
        self.controller.calibrate(lambda b: lm_loss(self.network, b)[0], batches)
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - begun

    def _save(self, step: int) -> None:
        if self.accelerator.is_main_process:
            state = {"dropbp": None if self.controller is None else self.controller.state_dict(),
                     "torch_rng": torch.random.get_rng_state().tolist()}  # LoRA dropout draws continue alike
            save_checkpoint(self.out / "checkpoints", step, self.network, self.optimizer, self.scheduler, state)
        self.accelerator.wait_for_everyone()


class _Log:
    """`train_log.jsonl`: one line per optimizer step; a resumed run drops lines past its checkpoint."""

    def __init__(self, path: Path, start: int, active: bool) -> None:
        self.path, self.active, self.elapsed = path, active, 0.0
        self.rows: list[dict[str, Any]] = []
        if path.is_file():
            # a line cut by a kill (the last one) is dropped with the steps past the checkpoint
            self.rows = [row for row in map(_json_or_none, path.read_text().splitlines())
                         if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= start]
            if active:
                path.write_text("".join(json.dumps(row) + "\n" for row in self.rows))
            self.elapsed = float(self.rows[-1]["elapsed"]) if self.rows else 0.0

    @property
    def last_loss(self) -> float:
        """The loss of the last step logged (a finished run resumed trains nothing: its loss is this)."""
        return float(self.rows[-1]["loss"]) if self.rows else math.nan

    def write(self, step: int, loss: float, tokens: int, seconds: float, calibration: float = 0.0) -> None:
        """`elapsed` counts a calibration (sensitivity, or auto's check) before this step: wall-clock DropBP spends."""
        self.elapsed += seconds + calibration
        if self.active:
            row = {"step": step, "loss": loss, "tokens": tokens, "seconds": seconds, "elapsed": self.elapsed}
            with self.path.open("a") as handle:
                handle.write(json.dumps(row | ({"calibration": calibration} if calibration else {})) + "\n")


def _json_or_none(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return None


def _export(network: nn.Module, tokenizer: Any, out: Path) -> None:
    """The final model: a peft adapter (LoRA) or a whole model folder (full), safetensors, plus the tokenizer."""
    network.eval()
    network.save_pretrained(out, safe_serialization=True)  # type: ignore[operator]  # a peft or HF model
    tokenizer.save_pretrained(out)
