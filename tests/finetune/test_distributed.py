"""`finetune()` as 2 CPU processes (gloo), launched as torchrun launches: one world, in sync, one writer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.finetune.test_train import CHATS
from tests.spawn import leave_world, spawn

WORLD, STEPS, DEADLINE = 2, 4, 90.0


def _out(root: str, rank: int) -> Path:
    # each rank gets its own output folder, so a file written by a rank other than the main one shows
    return Path(root) / ("out" if rank == 0 else f"out-rank{rank}")


def _worker(rank: int, port: int, model_dir: str, root: str) -> None:
    """One rank: the environment torchrun gives its children, then a plain `finetune()` call."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    _train(rank, model_dir, root)  # what holds the world is gone when it returns
    leave_world()


def _train(rank: int, model_dir: str, root: str) -> None:
    from accelerate import PartialState
    from safetensors.torch import save_file

    from verticals.finetune import FinetuneConfig, finetune
    from verticals.llm.local import LocalModel

    model = LocalModel(model_dir, device="cpu")
    config = FinetuneConfig(steps=STEPS, batch_size=2, lr=5e-2, warmup_steps=0, save_every=2, drop_rate=0.5,
                            max_length=64)
    result = finetune(model, CHATS, _out(root, rank), config, progress=False)
    state = PartialState()
    trainable = {n: p.detach().clone().contiguous() for n, p in model.model.named_parameters() if p.requires_grad}
    save_file(trainable, f"{root}/params{rank}.safetensors")
    Path(f"{root}/rank{rank}.json").write_text(json.dumps({
        "world": state.num_processes, "index": state.process_index, "type": str(state.distributed_type),
        "loss": result.final_loss, "rates": result.drop_rates}))


@pytest.mark.distributed
def test_two_cpu_processes_train_as_one_world(tiny_model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from verticals.llm.local import LocalModel

    spawn(_worker, (str(tiny_model_dir), str(tmp_path)), WORLD, DEADLINE, "the fine-tuning ranks")

    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert [s["world"] for s in seen] == [WORLD, WORLD]
    assert [s["index"] for s in seen] == [0, 1]
    assert {s["type"] for s in seen} == {"DistributedType.MULTI_CPU"}
    assert seen[0]["rates"] == seen[1]["rates"] == [0.5] * 4
    assert seen[0]["loss"] != seen[1]["loss"]  # each rank trained on its own shard of the data...

    params = [load_file(tmp_path / f"params{r}.safetensors") for r in range(WORLD)]
    assert params[0].keys() == params[1].keys() and any("lora_B" in n for n in params[0])
    for name in params[0]:  # ...and yet the ranks end with the same weights, bit for bit
        assert torch.equal(params[0][name], params[1][name]), name
    assert any(params[0][n].any() for n in params[0] if "lora_B" in n)  # lora_B starts at zero: it trained

    out = _out(str(tmp_path), 0)
    assert not _out(str(tmp_path), 1).exists()  # only the main process writes
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == list(range(1, STEPS + 1))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-000002", "step-000004"]

    tuned = LocalModel(tiny_model_dir, adapter=out, device="cpu")
    loaded = {n.removeprefix("base_model.model."): p for n, p in tuned.model.named_parameters()}
    for name, value in params[0].items():  # the saved adapter is the trained one
        assert torch.equal(loaded[name].detach(), value), name
