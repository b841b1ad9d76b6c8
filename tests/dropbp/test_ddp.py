"""DropBP under DistributedDataParallel: 2 CPU processes (gloo) draw the same masks and stay in sync."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.dropbp.tiny import backward, batch, tiny
from tests.spawn import leave_world, spawn

WORLD, STEPS, DEADLINE = 2, 4, 60.0


def _data(rank: int, step: int) -> dict[str, torch.Tensor]:
    return batch(seed=1000 + 10 * rank + step)


def _worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    _train(rank, out)  # its DDP wrapper is gone when it returns, before the world ends
    leave_world()


def _train(rank: int, out: str) -> None:
    from safetensors.torch import save_file
    from torch.nn.parallel import DistributedDataParallel

    from verticals import dropbp

    model = tiny("llama")
    controller = dropbp.apply(model, drop_rate=0.5, seed=0)
    ddp = DistributedDataParallel(model, find_unused_parameters=True)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.1)
    masks = []
    for step in range(STEPS):
        optimizer.zero_grad(set_to_none=True)
        ddp(**_data(rank, step)).loss.backward()
        masks.append(controller.mask.tolist())
        if step == 0:
            save_file({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None},
                      f"{out}/grads{rank}.safetensors")
        optimizer.step()
        controller.step()
    save_file({n: p.detach().clone().contiguous() for n, p in model.named_parameters()},
              f"{out}/params{rank}.safetensors")
    Path(f"{out}/masks{rank}.json").write_text(json.dumps(masks))


@pytest.mark.distributed
def test_ddp_ranks_share_masks_and_stay_synchronized(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from verticals import dropbp

    spawn(_worker, (str(tmp_path),), WORLD, DEADLINE, "the DDP workers")

    masks = [json.loads((tmp_path / f"masks{r}.json").read_text()) for r in range(WORLD)]
    assert masks[0] == masks[1]
    assert len(masks[0]) == STEPS and all(len(m) == 4 for m in masks[0])
    assert any(any(m) for m in masks[0])

    params = [load_file(tmp_path / f"params{r}.safetensors") for r in range(WORLD)]
    assert params[0].keys() == params[1].keys()
    assert all(torch.equal(params[0][n], params[1][n]) for n in params[0])
    initial = dict(tiny("llama").named_parameters())
    assert any(not torch.equal(params[0][n], initial[n].detach()) for n in params[0])

    # step 0: the DDP gradient of every kept parameter is the mean of the two single-process gradients
    model = tiny("llama")
    controller = dropbp.apply(model, drop_rate=0.5, seed=0)
    controller.set_mask(masks[0][0])
    single = [backward(model, _data(rank, 0)) for rank in range(WORLD)]
    ddp_grads = [load_file(tmp_path / f"grads{r}.safetensors") for r in range(WORLD)]
    kept = [n for n, g in single[0].items() if g is not None]
    assert 0 < sum(masks[0][0]) < 4  # seed 0 drops some branches and keeps others at step 0
    in_branches = {id(p) for b in controller.branches for p in b.parameters()}
    assert any(id(p) in in_branches for n, p in model.named_parameters() if n in kept)
    for name in kept:
        expected = (single[0][name] + single[1][name]) / 2
        torch.testing.assert_close(ddp_grads[0][name], expected, rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(ddp_grads[1][name], expected, rtol=1e-5, atol=1e-6, msg=name)
    dropped = {id(p) for b, d in zip(controller.branches, masks[0][0]) if d for p in b.parameters()}
    for name, p in model.named_parameters():
        if id(p) in dropped:
            assert name not in kept
            assert name not in ddp_grads[0] or not ddp_grads[0][name].any()
