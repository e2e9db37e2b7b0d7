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
