"""`DropBPCallback` driving a controller from a real `transformers.Trainer` (tiny Llama, CPU, 6 steps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

from tests.dropbp.tiny import batch, tiny
from verticals import dropbp
from verticals.dropbp import DropBPCallback

STEPS = 6


class Rows(Dataset):
    def __init__(self, n: int = 16) -> None:
        data = batch(seed=42, rows=n, length=8)
        self.rows = [{"input_ids": data["input_ids"][i], "labels": data["labels"][i]} for i in range(n)]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.rows[index]


class Recorder(TrainerCallback):
    """What the controller looked like at each step: rates before it, mask of its forward, whether calibrated."""

    def __init__(self, controller: dropbp.DropBP) -> None:
        self.controller = controller
        self.rates: list[np.ndarray] = []
        self.masks: list[list[bool]] = []
        self.calibrated: list[bool] = []
        self.training: list[bool] = []

    def on_step_begin(self, args, state, control, **kwargs) -> None:
        self.rates.append(self.controller.rates.copy())
        self.calibrated.append(self.controller.sensitivities is not None)
        self.training.append(self.controller.model.training)

    def on_step_end(self, args, state, control, **kwargs) -> None:
        self.masks.append(self.controller.mask.tolist())


def _train(tmp_path: Path, **settings) -> tuple[dropbp.DropBP, Recorder, torch.nn.Module]:
    model = tiny("llama")
    controller = dropbp.apply(model, seed=1, **settings)
    recorder = Recorder(controller)
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=STEPS, per_device_train_batch_size=2, report_to=[],
                             use_cpu=True, save_strategy="no", logging_strategy="no", learning_rate=1e-3,
                             dataloader_num_workers=0, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=Rows(), callbacks=[DropBPCallback(controller), recorder])
    trainer.train()
    return controller, recorder, model


def test_sensitivity_allocation_inside_the_trainer(tmp_path: Path) -> None:
    initial = {n: p.detach().clone() for n, p in tiny("llama").named_parameters()}
    controller, recorder, model = _train(tmp_path, drop_rate=0.5, allocation="sensitivity")
    assert controller.steps_done == STEPS
    assert controller.sensitivities is not None
    s = controller.sensitivities
    assert s.shape == (4,) and np.isfinite(s).all() and (s > 0).all()  # measured in training mode
    rates = controller.rates
    flops = controller.flops
    assert (flops * (1 - rates)).sum() <= 0.5 * flops.sum() * (1 + 1e-9)
    assert rates.max() <= 0.9 + 1e-9
    assert not np.allclose(rates, 0.5)  # no longer uniform
    # uniform until 10% of training (step 1 here), calibrated from then on
    assert recorder.calibrated == [False] + [True] * (STEPS - 1)
    np.testing.assert_allclose(recorder.rates[0], 0.5)
    assert all(np.allclose(r, rates) for r in recorder.rates[1:])
    assert all(recorder.training)
    assert len(recorder.masks) == STEPS
    assert any(any(m) for m in recorder.masks)
    trained = dict(model.named_parameters())
    assert any(not torch.equal(trained[n].detach(), initial[n]) for n in initial)


def test_uniform_linear_warmup_rates_grow(tmp_path: Path) -> None:
    controller, recorder, _ = _train(tmp_path, drop_rate=0.6, schedule="linear", warmup_steps=STEPS)
    assert controller.steps_done == STEPS
    assert controller.sensitivities is None
    means = [float(r.mean()) for r in recorder.rates]
    np.testing.assert_allclose(means, [0.6 * i / STEPS for i in range(STEPS)], atol=1e-9)
    assert all(np.allclose(r, r[0]) for r in recorder.rates)  # uniform across branches
    np.testing.assert_allclose(controller.rates, 0.6)
    assert not any(recorder.masks[0])  # rate 0 at step 0: nothing dropped


def test_auto_measures_before_the_first_step_and_trains_at_the_rate_it_chose(tmp_path: Path) -> None:
    controller, recorder, _ = _train(tmp_path, drop_rate="auto", min_cosine=-1.0)  # any rate passes: the highest
    assert controller.fidelity is not None and controller.fidelity.chosen == 0.75
    assert recorder.rates[0].tolist() == [0.75] * 4  # set by the callback before the first step's forward
    assert controller.sensitivities is None  # uniform: the check measured it, no sensitivity pass was paid
