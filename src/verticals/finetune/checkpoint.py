"""Checkpoints as safetensors + JSON (nothing pickled): trainable weights, optimizer, schedule, position.

A checkpoint is written to a hidden staging folder and renamed into place, so an interrupted save
never leaves a half checkpoint that a resumed run would trust.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from verticals.finetune.config import FinetuneError

STATE_NAME = "trainer_state.json"
KEEP = 2


def save_checkpoint(folder: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: Any, state: dict[str, Any]) -> Path:
    """Write `folder/step-NNNNNN` atomically; keep only the newest checkpoints."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob(".saving-*"):  # left by a save that was killed (kill -9 runs no `finally`)
        shutil.rmtree(stale, ignore_errors=True)
    target = folder / f"step-{step:06d}"
    staging = Path(tempfile.mkdtemp(prefix=".saving-", dir=folder))
    try:
        trainable = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
        save_file(trainable, str(staging / "trainable.safetensors"))
        tensors, meta = _flatten_optimizer(optimizer.state_dict())
        save_file(tensors, str(staging / "optimizer.safetensors"))
        (staging / "optimizer.json").write_text(json.dumps(meta))
        (staging / "scheduler.json").write_text(json.dumps(scheduler.state_dict()))
        (staging / STATE_NAME).write_text(json.dumps({"step": step, **state}, indent=2))
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for old in sorted(folder.glob("step-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def latest_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint under `folder`, if any."""
    done = checkpoints(folder)
    return done[0] if done else None


def checkpoints(folder: Path) -> list[Path]:
    """The complete checkpoints under `folder`, newest first."""
    return [p for p in sorted(folder.glob("step-*"), reverse=True) if (p / STATE_NAME).is_file()]


def restore(folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, Any]:
    """Restore the newest checkpoint that can be read. A damaged one (a file cut short, say) is renamed
    `damaged-step-N` (kept for a look, never used or deleted) and the one before is tried, with a warning.

    Raises:
        FinetuneError: no checkpoint can be read, or one holds other trainable weights than this run.
    """
    import warnings

    errors = []
    for path in checkpoints(folder):
        try:
            return load_checkpoint(path, model, optimizer, scheduler)
        except _Damaged as err:
            errors.append(f"{path.name}: {err}")
            kept = path.with_name(f"damaged-{path.name}")
            while kept.exists():
                kept = kept.with_name(kept.name + "+")
            path.rename(kept)
            warnings.warn(f"checkpoint {path} cannot be read ({err}); it is kept as {kept.name} and the "
                          "checkpoint before it is used", stacklevel=2)
    raise FinetuneError(f"no checkpoint under {folder} can be read ({'; '.join(errors)}); start again with a new "
                        "output folder")


class _Damaged(FinetuneError):
    """A checkpoint whose files cannot be read."""


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, Any]:
    """Restore weights, optimizer and schedule in place; return the trainer state."""
    try:
        trainable = load_file(str(path / "trainable.safetensors"))
        expected = {n for n, p in model.named_parameters() if p.requires_grad}
        if set(trainable) != expected:
            raise FinetuneError(f"checkpoint {path} holds other trainable weights than this run "
                                f"({len(trainable)} vs {len(expected)}); resume with the same settings")
        model.load_state_dict(trainable, strict=False)
        optimizer.load_state_dict(_unflatten_optimizer(load_file(str(path / "optimizer.safetensors")),
                                                       json.loads((path / "optimizer.json").read_text())))
        scheduler.load_state_dict(json.loads((path / "scheduler.json").read_text()))
        return dict(json.loads((path / STATE_NAME).read_text()))
    except FinetuneError:
        raise
    except Exception as err:  # noqa: BLE001 - safetensors, json and torch each fail their own way on a cut file
        raise _Damaged(f"{type(err).__name__}: {str(err)[:120]}") from err


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    values: dict[str, dict[str, Any]] = {}
    for index, slots in state["state"].items():
        values[str(index)] = {}
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().contiguous().cpu()
                values[str(index)][key] = {"tensor": True}
            else:
                values[str(index)][key] = value
    return tensors, {"state": values, "param_groups": state["param_groups"]}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state = {int(index): {key: tensors[f"{index}.{key}"] if isinstance(v, dict) and v.get("tensor") else v
                          for key, v in slots.items()} for index, slots in meta["state"].items()}
    return {"state": state, "param_groups": meta["param_groups"]}
