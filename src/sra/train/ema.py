"""Exponential moving average of the weights: the model used for sampling and, in SRA, the teacher."""
from __future__ import annotations

import torch


def ema_decay(step: int, *, decay: float, half_life_kimg: float | None, batch_size: int, warmup: bool) -> float:
    """Per-step decay. A half-life H (thousands of images) gives decay 0.5 ** (batch / (1000 H)); `warmup` caps
    the decay at (1 + n) / (10 + n) so that short runs do not keep the initial weights
    (a constant 0.999 keeps 0.999^1500 = 22 % of them after 1500 steps: a tiny CPU run sampled noise so)."""
    if half_life_kimg is not None:
        decay = 0.5 ** (batch_size / (half_life_kimg * 1000.0))
    if warmup:
        decay = min(decay, (1 + step) / (10 + step))
    return decay


@torch.no_grad()
def update_ema(ema: torch.nn.Module, model: torch.nn.Module | list[torch.Tensor], decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, as one multi-tensor lerp over all trainable parameters.
    `model` may also be the list of its (unsharded) parameters, in `parameters()` order."""
    source = list(model.parameters()) if isinstance(model, torch.nn.Module) else model
    pairs = [(e, p) for e, p in zip(ema.parameters(), source) if p.requires_grad]
    if not pairs:
        return
    e, p = zip(*pairs)
    torch._foreach_lerp_(list(e), [q.detach().to(e[0].dtype) for q in p], 1.0 - decay)


class EMAUpdater:
    """The EMA update of each optimizer step, serial or overlapped with the next step's student forward.

    The student's forward of step n+1 does not need the EMA of step n: only the teacher (and whatever reads the EMA:
    checkpoints, sample grids, evaluation) does. With `overlap` on CUDA, `update` launches the lerp on a side stream
    after the optimizer step and returns; `wait` makes the current stream wait for it (a device-side event wait, no
    host sync) and is called where the EMA is read (the teacher's forward, the loop's checkpoint/grid/evaluation) or
    the model's weights are about to change (the next optimizer step). Without CUDA the update is deferred to `wait`
    instead, which exercises the same wait points and gives the same numbers: the lerp reads the same weights either
    way, so overlapped and serial EMAs are bit-identical (tests/test_ema_overlap.py). `after` runs once each update is
    complete (the FP8 teacher's recast)."""

    def __init__(self, ema: torch.nn.Module, overlap: bool = False, device: torch.device | None = None):
        self.ema, self.overlap, self.after = ema, overlap, []
        cuda = overlap and device is not None and torch.device(device).type == "cuda"
        self.stream = torch.cuda.Stream(device) if cuda else None
        self.pending = None  # CPU: (parameters, decay) to apply; CUDA: the side stream's completion event

    def update(self, params, decay: float) -> None:
        if not self.overlap:
            self._apply(params, decay)
            return
        self.wait()  # one update in flight at a time
        if self.stream is None:
            self.pending = (params, decay)
            return
        self.stream.wait_stream(torch.cuda.current_stream(self.stream.device))  # after the optimizer step
        with torch.cuda.stream(self.stream):
            self._apply(params, decay)
        self.pending = self.stream.record_event()

    def wait(self) -> None:
        if self.pending is None:
            return
        pending, self.pending = self.pending, None
        if self.stream is None:
            self._apply(*pending)
        else:
            torch.cuda.current_stream(self.stream.device).wait_event(pending)

    def _apply(self, params, decay: float) -> None:
        update_ema(self.ema, params, decay)
        for fn in self.after:
            fn()


class EMAReadyTeacher:
    """A teacher whose forward first waits for the EMA update in flight (`EMAUpdater.wait`)."""

    def __init__(self, teacher, updater: EMAUpdater):
        self.teacher, self.updater = teacher, updater

    def forward_features(self, *args, **kwargs):
        self.updater.wait()
        return self.teacher.forward_features(*args, **kwargs)
