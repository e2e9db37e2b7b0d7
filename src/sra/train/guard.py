"""Divergence guard: non-finite steps counted on the device, read back only where the loop syncs anyway.

A step is non-finite when its loss or gradients are not finite: it is skipped (never written into the weights; under
fp16 the loss scaler skips it and lowers the scale). The counters are device tensors updated without a host sync, so
the step stays asynchronous on GPUs; `check` reads them at log and checkpoint steps. A run stops (non-zero exit, the
last good checkpoint kept) after `limit` consecutive non-finite steps, or as soon as a check finds non-finite weights:
an update that overflows cannot recover (every later loss is NaN), and such weights are never saved.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import distributed
from ..runfolder import Stopped

DIVERGED_EXIT = 3  # exit status of a run stopped by the guard


class NonFiniteGuard:
    def __init__(self, limit: int, device: torch.device, state: dict | None = None):
        state = state or {}
        self.limit = limit  # consecutive non-finite steps that stop the run; 0: never stop
        self.streak = torch.tensor(int(state.get("streak", 0)), device=device)  # consecutive, up to the last step
        self.peak = self.streak.clone()  # longest streak since the last check (a streak may end between checks)
        self.total = torch.tensor(int(state.get("total", 0)), device=device)  # all non-finite steps of the run

    def update(self, nonfinite: torch.Tensor) -> None:
        """Count one step; `nonfinite` is a 0-dim bool tensor on the device (no host sync here)."""
        self.streak.add_(1).mul_(nonfinite)  # +1 on a non-finite step, back to 0 on a finite one; in place
        torch.maximum(self.peak, self.streak, out=self.peak)
        self.total.add_(nonfinite)

    def state_dict(self) -> dict:
        return {"streak": int(self.streak), "total": int(self.total)}

    def check(self, step: int, modules, last_good: Path | None) -> None:
        """Raise Stopped if the run diverged by `step` (one host sync)."""
        peak = int(self.peak)
        self.peak = self.streak.clone()
        keep = f"the last good checkpoint is {last_good}" if last_good else "no checkpoint was written"
        finite = torch.stack([torch.isfinite(local(p)).all() for m in modules for p in m.parameters()]).all()
        bad_weights = distributed.any_rank(not bool(finite))
        if bad_weights:
            raise Stopped(f"training diverged: the weights became non-finite by step {step} (an update overflowed; "
                          f"lower --lr); they were not saved, {keep}", DIVERGED_EXIT)
        if self.limit and peak >= self.limit:
            raise Stopped(f"training diverged: {peak} consecutive steps with a non-finite loss or gradient by step "
                          f"{step} (limit --max-nonfinite-steps {self.limit}; lower --lr or use bf16); {keep}",
                          DIVERGED_EXIT)


def local(p: torch.Tensor) -> torch.Tensor:
    """This rank's shard of an FSDP parameter, the tensor itself otherwise."""
    return p.to_local() if hasattr(p, "to_local") else p
