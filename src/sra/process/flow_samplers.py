"""Samplers for velocity (SiT) models: t runs from 1 (noise) to 0 (data), the state is kept in float64.

euler_sampler           the probability-flow ODE dx = v(x, t) dt, Euler or Heun, on linspace(1, 0, num_steps + 1).
euler_maruyama_sampler  the reverse SDE with the same marginals:  dx = [v - w_t s] dt + sqrt(2 w_t) dW  with dt < 0,
                        where the score s = grad log p_t is read off the velocity through the path (see
                        `score_from_velocity`). Time grid linspace(1, 0.04, num_steps), then one last deterministic
                        (noise-free) step to t = 0. The diffusion coefficient (`diffusion_form`):
                          "t"      w_t = t, i.e. g_t^2 = 2 t, on every path: the released REPA / SRA samplers
                                   (`compute_diffusion` returns 2 t), so the protocol of the published FIDs (default);
                          "sigma"  w_t = sigma_t (SiT's "sigma" form). Equal to "t" on the linear path (sigma_t = t),
                                   different on the cosine path.

Classifier-free guidance uses the null label `model.num_classes` and is applied only in steps whose start time t lies
in [guidance_low, guidance_high] (the guidance interval of Kynkaanniemi et al. 2024); a Heun corrector follows the
decision of its step. The model sees the step's time t itself (the convention of process.flow_path).

Per-image randomness: `generator` may be one torch.Generator, or a sequence with one generator per image so that an
image's SDE noise does not depend on which batch it is in.
"""
from __future__ import annotations

import torch

from .base import check_sampler_args, randn_per_image
from .flow_path import PATHS, expand_like, path_coefficients

SDE_LAST_TIME = 0.04  # end of the stochastic part of the SDE grid (REPA/SRA); the rest is one deterministic step
DIFFUSION_FORMS = ("t", "sigma")  # SDE diffusion w_t: t (the released samplers, default) or sigma_t (SiT's form)


def sde_diffusion(form: str, path: str, t: float) -> float:
    """w_t of the reverse SDE dx = [v - w_t s] dt + sqrt(2 w_t) dW (see the module docstring)."""
    if form == "t":
        return float(t)
    if form == "sigma":
        return path_coefficients(path, torch.tensor(t, dtype=torch.float64))[1].item()
    raise ValueError(f"unknown SDE diffusion form {form!r}; choices: {', '.join(DIFFUSION_FORMS)}")


def guided_velocity(model, x: torch.Tensor, t: float, y: torch.Tensor, cfg_scale: float = 1.0) -> torch.Tensor:
    """Model velocity at scalar time t as float64; guided with the null label when cfg_scale > 1 (one batched forward
    of conditional and unconditional inputs), else one plain conditional forward."""
    dtype = next(model.parameters()).dtype
    n, c = x.shape[0], x.shape[1]
    if cfg_scale > 1.0:
        null = torch.full_like(y, model.num_classes)
        tt = torch.full((2 * n,), t, device=x.device, dtype=torch.float32)
        out = model(torch.cat([x, x]).to(dtype), tt, torch.cat([y, null]))[:, :c].double()
        cond, uncond = out[:n], out[n:]
        return uncond + cfg_scale * (cond - uncond)
    tt = torch.full((n,), t, device=x.device, dtype=torch.float32)
    return model(x.to(dtype), tt, y)[:, :c].double()


def step_cfg_scale(cfg_scale: float, t: float, guidance_low: float, guidance_high: float) -> float:
    """The guidance scale of a step starting at t: cfg_scale inside [guidance_low, guidance_high], 1 (none) outside."""
    return cfg_scale if guidance_low <= t <= guidance_high else 1.0


def score_from_velocity(v: torch.Tensor, x: torch.Tensor, t: float, path: str = "linear") -> torch.Tensor:
    """grad log p_t(x) from the velocity. With x = alpha x0 + sigma e and v = d_alpha x0 + d_sigma e, eliminating x0
    gives (alpha / d_alpha) v - x = (alpha d_sigma / d_alpha - sigma) e, and the score is -E[e | x] / sigma."""
    tt = torch.full((x.shape[0],), float(t), dtype=torch.float64, device=x.device)
    alpha, sigma, d_alpha, d_sigma = (expand_like(c, x) for c in path_coefficients(path, tt))
    ratio = alpha / d_alpha
    return (ratio * v - x) / (sigma ** 2 - ratio * d_sigma * sigma)


@torch.no_grad()
def euler_sampler(model, noise: torch.Tensor, y: torch.Tensor, num_steps: int = 50, heun: bool = False,
                  cfg_scale: float = 1.0, guidance_low: float = 0.0, guidance_high: float = 1.0,
                  path_type: str = "linear", generator=None) -> torch.Tensor:
    """Euler (or Heun) integration of dx/dt = v(x, t) on linspace(1, 0, num_steps + 1). Heun corrects every step but
    the last (whose end point t = 0 the model never sees). `path_type` and `generator` are accepted so that both
    samplers share one signature; the ODE needs neither (the velocity field does not depend on the path's name)."""
    check_sampler_args(num_steps, cfg_scale, guidance_low, guidance_high)
    if path_type not in PATHS:
        raise ValueError(f"unknown path {path_type!r}; choices: {', '.join(PATHS)}")
    grid = torch.linspace(1.0, 0.0, num_steps + 1, dtype=torch.float64).tolist()
    x = noise.double()
    for i, (t_cur, t_next) in enumerate(zip(grid[:-1], grid[1:])):
        scale = step_cfg_scale(cfg_scale, t_cur, guidance_low, guidance_high)
        d_cur = guided_velocity(model, x, t_cur, y, scale)
        x_next = x + (t_next - t_cur) * d_cur
        if heun and i < num_steps - 1:
            d_next = guided_velocity(model, x_next, t_next, y, scale)
            x_next = x + (t_next - t_cur) * 0.5 * (d_cur + d_next)
        x = x_next
    return x.to(noise.dtype)


@torch.no_grad()
def euler_maruyama_sampler(model, noise: torch.Tensor, y: torch.Tensor, num_steps: int = 50, heun: bool = False,
                           cfg_scale: float = 1.0, guidance_low: float = 0.0, guidance_high: float = 1.0,
                           path_type: str = "linear", generator=None, diffusion_form: str = "t") -> torch.Tensor:
    """Euler-Maruyama on the reverse SDE with w_t = t (`diffusion_form="t"`, the released samplers) or sigma_t
    ("sigma"): num_steps - 1 stochastic steps on linspace(1, 0.04, num_steps), then a deterministic step from 0.04 to
    0 (the drift's mean, no noise), num_steps model calls in all. `heun` is accepted for a shared signature and
    ignored (as in REPA). Guidance acts on the velocity; since the score is affine in the velocity at fixed x this
    equals guiding the drift (as the reference does)."""
    check_sampler_args(num_steps, cfg_scale, guidance_low, guidance_high)
    if path_type not in PATHS:
        raise ValueError(f"unknown path {path_type!r}; choices: {', '.join(PATHS)}")
    sde_diffusion(diffusion_form, path_type, 1.0)  # refuse an unknown form before any model call
    grid = torch.linspace(1.0, SDE_LAST_TIME, num_steps, dtype=torch.float64).tolist() + [0.0]
    x = noise.double()
    last = len(grid) - 2
    for i, (t_cur, t_next) in enumerate(zip(grid[:-1], grid[1:])):
        dt = t_next - t_cur  # < 0
        v = guided_velocity(model, x, t_cur, y, step_cfg_scale(cfg_scale, t_cur, guidance_low, guidance_high))
        w = sde_diffusion(diffusion_form, path_type, t_cur)
        drift = v - w * score_from_velocity(v, x, t_cur, path_type)
        x = x + dt * drift
        if i < last:
            x = x + (2 * w * abs(dt)) ** 0.5 * randn_per_image(x, generator)
    return x.to(noise.dtype)
