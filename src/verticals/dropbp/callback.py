"""`DropBPCallback`: DropBP inside a transformers `Trainer`.

Masks are drawn by the controller before every training forward pass (one per micro-batch);
the callback advances the drop-rate schedule after each optimizer step and, for sensitivity
allocation, measures sensitivities at 10% of training (uniform rates until then, as in the paper)
on the first micro-batches of the training data. With `drop_rate="auto"` it measures before the
first step (nothing drops until then) and sets the rate the fidelity check chooses.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

import torch
from transformers import TrainerCallback

from verticals.dropbp.model import DropBP


class DropBPCallback(TrainerCallback):
    """Drive a `DropBP` controller from a `Trainer`.

    Args:
        controller (`DropBP`): from `verticals.dropbp.apply(model, ...)` on the model given to the Trainer.
        probe_batches (`int`): micro-batches used to measure sensitivity, defaults to 2.

    Example:
        >>> controller = dropbp.apply(model, drop_rate=0.5, allocation="sensitivity")   # doctest: +SKIP
        >>> Trainer(model, args, train_dataset=data, callbacks=[DropBPCallback(controller)])  # doctest: +SKIP
    """

    def __init__(self, controller: DropBP, probe_batches: int = 2) -> None:
        self.controller = controller
        self.probe_batches = probe_batches

    def on_step_begin(self, args: Any, state: Any, control: Any, model: Any = None, train_dataloader: Any = None,
                      **kwargs: Any) -> None:
        controller = self.controller
        due = max(1, int(0.1 * state.max_steps)) if state.max_steps else 1
        auto = controller.config.auto and controller.fidelity is None
        sensitivity = (controller.config.allocation == "sensitivity" and controller.sensitivities is None
                       and not controller.config.auto)  # auto allocates with its check
        if (auto or sensitivity and state.global_step >= due) and train_dataloader is not None:
            device = next(controller.model.parameters()).device
            with torch.random.fork_rng(devices=[]):  # drawing probe batches must not shift the run's RNG
                batches = [{k: v.to(device) for k, v in batch.items()}
                           for batch in islice(iter(train_dataloader), self.probe_batches)]
            controller.calibrate(lambda b: controller.model(**b).loss, batches)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.controller.step()
