"""The learning rate of each optimizer step (`--lr-schedule`): a linear warm-up, then constant (the paper's recipe:
AdamW at 1e-4 throughout) or a cosine or linear decay to `--lr-min` at the last step.

Steps are counted as the loop counts them: `step` is 0-based and the update it makes completes step `step + 1`, the
step that metrics.jsonl logs with this learning rate. The warm-up factor is min(1, (step + 1) / warmup), so its first
update already moves (lr / warmup) and the peak is reached by the update that completes step `warmup`.
"""
from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine", "linear")


def learning_rate(step: int, *, lr: float, warmup: int, schedule: str = "constant", total: int | None = None,
                  lr_min: float = 0.0) -> float:
    """The learning rate of optimizer step `step` (0-based) of a run of `total` steps.

    constant: lr * min(1, (step + 1) / warmup), or lr without warm-up (the loop's formula before schedules existed,
    kept as the same expression so that a constant run is bit-identical to one from before).
    cosine / linear: the same warm-up up to the peak, then, with n = step + 1, peak = max(warmup, 1) and
    p = (n - peak) / (total - peak) in [0, 1],
        cosine: lr_min + (lr - lr_min) (1 + cos(pi p)) / 2
        linear: lr_min + (lr - lr_min) (1 - p)
    so the peak is the update that completes step `peak` (the first step without warm-up) and lr_min the one that
    completes step `total`, the last."""
    n = step + 1
    warm = lr * min(1.0, n / warmup) if warmup else lr
    if schedule == "constant":
        return warm
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule {schedule!r}; one of {', '.join(SCHEDULES)}")
    peak = max(warmup, 1)
    if n <= peak or total is None or total <= peak:  # still warming up, or a run that ends within its warm-up
        return warm
    p = min(1.0, (n - peak) / (total - peak))
    shape = (1.0 + math.cos(math.pi * p)) / 2.0 if schedule == "cosine" else 1.0 - p
    return lr_min + (lr - lr_min) * shape
