"""The overlapped EMA (train/ema.py `EMAUpdater`): every place that reads the EMA or changes the weights waits for
the update in flight, so training with the update deferred gives the serial update's weights, EMA and losses bit for
bit. On the CPU the update is deferred to the wait points (on CUDA it runs on a side stream between them); a missing
wait point would let the teacher read the previous step's EMA, and this test would see it."""
import dataclasses

import pytest
import torch

from sra import distributed
from sra.train.config import DataShape, resolve_spec
from sra.train.ema import EMAUpdater, update_ema
from sra.train.step import build_step, run_step


def train_steps(overlap: bool, flags: dict, steps: int = 4):
    spec, _ = resolve_spec({"model": "SiT-T/4", "batch_size": 8, "report_to": "none", **flags},
                           data=DataShape((1, 8, 8), 10, 64))
    torch.manual_seed(0)
    s = build_step(spec, distributed.Context(device=torch.device("cpu")), ema_overlap=overlap)
    assert s.ema_updates.overlap is overlap
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
    losses = []
    for step in range(steps):
        stats = {}
        draws = s.objective.draw(8, (1, 8, 8), "cpu", torch.Generator().manual_seed(step))
        run_step(s, [(x[:4], y[:4], None, 0), (x[4:], y[4:], None, 4)], draws, s.objective.weights(), 0.9, 1.0, stats)
        losses.append({k: v.clone() for k, v in stats.items()})
    return s.model.state_dict(), s.ema_ready().state_dict(), losses, s


@pytest.mark.parametrize("flags", [{}, {"align": {"teacher": "online"}}, {"mix": {"mask_ratio": (0.25,)}}],
                         ids=["ema-teacher", "online-teacher", "token-groups"])
def test_deferred_ema_is_bit_identical_to_the_serial_update(flags):
    model_a, ema_a, loss_a, _ = train_steps(False, flags)
    model_b, ema_b, loss_b, s = train_steps(True, flags)
    for k in model_a:
        assert torch.equal(model_a[k], model_b[k]), k
        assert torch.equal(ema_a[k], ema_b[k]), k
    assert all(torch.equal(a[k], b[k]) for a, b in zip(loss_a, loss_b) for k in a)


def test_an_update_is_applied_only_at_a_wait_and_exactly_once():
    ema, model = torch.nn.Linear(3, 3), torch.nn.Linear(3, 3)
    reference = torch.nn.Linear(3, 3)
    reference.load_state_dict(ema.state_dict())
    updates, done = EMAUpdater(ema, overlap=True), []
    updates.after.append(lambda: done.append(1))
    updates.update(list(model.parameters()), 0.5)
    assert not done and not torch.equal(ema.weight, model.weight)  # deferred
    updates.wait()
    updates.wait()  # nothing left: applied once
    update_ema(reference, model, 0.5)
    assert done == [1] and torch.equal(ema.weight, reference.weight)
