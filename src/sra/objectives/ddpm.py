"""DiT + SRA objective: DDPM epsilon prediction with learned variance (MSE + variational-bound term) plus the
self-alignment term. Time is an integer step 0..999; the teacher sees t' = max(t - k, 1) with an integer offset k."""
from __future__ import annotations

import math

import torch

from ..diffusion import NUM_TIMESTEPS, diffusion_terms, get_diffusion
from .align import AlignConfig, alignment
from .flow import apply_label_drop, unwrap


def teacher_step_offset(cfg: AlignConfig, n: int, device, generator: torch.Generator | None,
                        num_timesteps: int = NUM_TIMESTEPS) -> torch.Tensor:
    """Integer k >= 0 (N,): U{0..K-1} with K = floor(T t_max) (SRA's DiT code: randint(0, 200)), K itself ("fixed"),
    or 0 ("none"). Drawn even when unused to keep the RNG stream the same across options."""
    k_max = math.floor(num_timesteps * cfg.t_max + 1e-9)
    k = torch.randint(0, max(k_max, 1), (n,), generator=generator, device=device)
    if cfg.interval == "fixed":
        return torch.full_like(k, k_max)
    if cfg.interval == "none":
        return torch.zeros_like(k)
    return k


class DiffusionObjective:
    """Callable returning named per-sample terms {"denoise": (N,), "vb": (N,), "align": (N,)}; weights are applied in
    `combine` (denoise + vb + lambda align, as DiT's MSE + vb). Draws come from `generator` in a fixed order, as in
    FlowObjective, so a batch gets the same draws whatever it is split into, and resuming reproduces them."""

    def __init__(self, align: AlignConfig):
        self.align = align
        self.diffusion = get_diffusion()  # all 1000 steps: the step index is the model's time input

    def __call__(self, model, teacher, x0: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None,
                 draws: dict | None = None) -> dict[str, torch.Tensor]:
        """Terms for clean inputs x0 (N, C, H, W) and labels y (N,). `draws` (from `draw`, possibly a slice of a larger
        batch's) fixes the randomness; otherwise it is drawn here from `generator`."""
        a, diffusion = self.align, self.diffusion
        if draws is None:
            draws = self.draw(x0.shape[0], x0.shape[1:], x0.device, generator)
        t, noise = draws["t"], draws["noise"].to(x0.dtype)
        y = apply_label_drop(unwrap(model), y, draws["drop"])
        xt = diffusion.q_sample(x0, t, noise)
        if not a.active:  # lambda = 0: exactly plain DiT, no teacher forward at all
            return diffusion_terms(diffusion, model(xt, t, y), x0, xt, t, noise)
        out, h = model(xt, t, y, feature_depth=a.block_out_s)
        terms = diffusion_terms(diffusion, out, x0, xt, t, noise)
        t_teacher = (t - draws["k"]).clamp(min=1)  # as SRA's DiT code: never the (almost clean) step 0
        xt_teacher = diffusion.q_sample(x0, t_teacher, noise)  # same x0, same noise, same (dropped) labels
        terms["align"] = alignment(a, unwrap(model), teacher, h, xt_teacher, t_teacher, y)
        return terms

    def draw(self, n: int, sample_shape, device, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """All random draws of one step for n samples, in a fixed order: label-drop uniforms, t, noise, offset k."""
        drop = torch.rand(n, generator=generator, device=device)
        t = torch.randint(0, self.diffusion.num_timesteps, (n,), generator=generator, device=device)
        noise = torch.randn((n, *sample_shape), generator=generator, device=device)
        k = teacher_step_offset(self.align, n, device, generator, self.diffusion.num_timesteps)
        return {"drop": drop, "t": t, "noise": noise, "k": k}
