"""What every process shares: per-token times spread to pixels, per-image noise, and sampler argument checks.

A process (one per model family, `sra.process.PROCESSES`) owns its time convention, the corruption of clean inputs
(one time per sample, or one per token for token groups), the regression target and denoising loss, the teacher's
lower-noise view, and its samplers with their guidance protocol. Everything else asks the process; nothing else
branches on the family.
"""
from __future__ import annotations

from typing import Sequence

import torch


def pixel_map(values: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Per-token values (N, T) -> per-pixel (N, 1, H, W): each patch takes its token's value."""
    n, side = values.shape[0], int(round(values.shape[1] ** 0.5))
    grid = values.reshape(n, side, side)
    return grid.repeat_interleave(patch_size, 1).repeat_interleave(patch_size, 2)[:, None]


def randn_per_image(like: torch.Tensor, generator: torch.Generator | Sequence[torch.Generator] | None) -> torch.Tensor:
    """Standard normal noise shaped like `like` (float64, on its device): from the global RNG, one generator, or one
    generator per image (row i from generator[i], so it does not depend on the batch it is drawn in)."""
    if generator is None:
        return torch.randn_like(like, dtype=torch.float64)
    if isinstance(generator, torch.Generator):
        z = torch.randn(like.shape, generator=generator, device=generator.device)
    else:
        if len(generator) != like.shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {like.shape[0]}")
        z = torch.stack([torch.randn(like.shape[1:], generator=g, device=g.device) for g in generator])
    return z.to(like.device, torch.float64)


def check_sampler_args(num_steps: int, cfg_scale: float, guidance_low: float, guidance_high: float) -> None:
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1 (got {num_steps})")
    if cfg_scale < 1.0:
        raise ValueError(f"cfg_scale must be >= 1 (got {cfg_scale}); 1 means no guidance")
    if not 0.0 <= guidance_low <= guidance_high <= 1.0:
        raise ValueError(f"guidance interval [{guidance_low}, {guidance_high}] must satisfy 0 <= low <= high <= 1")
