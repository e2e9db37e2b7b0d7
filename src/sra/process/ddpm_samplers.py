"""DDPM ancestral sampling and DDIM (eta = 0) for learned-sigma epsilon models, on a respaced grid, with
classifier-free guidance on epsilon inside a guidance interval. State kept in float64.

Which channels are guided (`cfg_channels`):
  "dit"  DiT's protocol (default): DiT's `forward_with_cfg`, and the authors' DiT-SRA copy of it, guide only epsilon
         channels 0-2 "for exact reproducibility"; epsilon channel 3 and the variance channels are the conditional
         branch's, unguided. (Their sampler runs conditional and unconditional halves side by side but each step
         restarts both from the conditional half, so the unconditional half's unguided channels never matter.) The
         published DiT and DiT+SRA CFG numbers were made so. With 3 or fewer channels every epsilon channel is guided.
  "all"  the standard rule on every epsilon channel (DiT's commented-out alternative); variance still conditional.

Per-image randomness (DDPM): `generator` may be one torch.Generator, or a sequence with one generator per image, as
for the SiT samplers (`flow_samplers.randn_per_image`).
"""
from __future__ import annotations

import torch

from .base import check_sampler_args, randn_per_image
from .ddpm_schedule import NUM_TIMESTEPS, Diffusion, get_diffusion

METHODS = ("ddpm", "ddim")
CFG_CHANNELS = ("dit", "all")
DIT_GUIDED_CHANNELS = 3  # DiT's forward_with_cfg: model_out[:, :3]


def guided_output(model, x: torch.Tensor, step: int, y: torch.Tensor, cfg_scale: float, guidance_low: float,
                  guidance_high: float, cfg_channels: str = "dit") -> tuple[torch.Tensor, torch.Tensor]:
    """(eps, v) in float64 at original step `step` (0..999). Guidance, eps = eps_u + w (eps_c - eps_u) on the
    channels `cfg_channels` names (see the module docstring), only where cfg_scale > 1 and
    guidance_low <= step / 1000 <= guidance_high; the other channels and v come from the conditional branch."""
    dtype = next(model.parameters()).dtype
    n, c = x.shape[:2]
    if cfg_scale > 1.0 and guidance_low <= step / NUM_TIMESTEPS <= guidance_high:
        null = torch.full_like(y, model.num_classes)
        tt = torch.full((2 * n,), step, device=x.device, dtype=torch.long)
        out = model(torch.cat([x, x]).to(dtype), tt, torch.cat([y, null])).double()  # (2N, 2C, H, W)
        cond, uncond = out[:n], out[n:]
        k = min(DIT_GUIDED_CHANNELS, c) if cfg_channels == "dit" else c
        eps = cond[:, :c].clone()
        eps[:, :k] = uncond[:, :k] + cfg_scale * (cond[:, :k] - uncond[:, :k])
        return eps, cond[:, c:]
    tt = torch.full((n,), step, device=x.device, dtype=torch.long)
    out = model(x.to(dtype), tt, y).double()
    return out[:, :c], out[:, c:]


def ddim_step(diffusion: Diffusion, x: torch.Tensor, i: int, eps: torch.Tensor) -> torch.Tensor:
    """DDIM with eta = 0 (Song et al. 2021, Eq. 12) from step i of `diffusion`:
    x_prev = sqrt(abar_prev) x0_pred + sqrt(1 - abar_prev) eps."""
    t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
    x0 = diffusion.predict_x0(x, t, eps)
    abar_prev = diffusion.extract("alphas_cumprod_prev", t, x)
    return abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps


def ddpm_step(diffusion: Diffusion, x: torch.Tensor, i: int, eps: torch.Tensor, v: torch.Tensor,
              generator=None) -> torch.Tensor:
    """Ancestral step from step i: x_prev ~ N(posterior mean at x0_pred, learned variance); no noise at i = 0."""
    if v.shape[1] != x.shape[1]:
        raise ValueError("DDPM sampling needs a learned-sigma model (2C output channels: eps, then v)")
    t = torch.full((x.shape[0],), i, device=x.device, dtype=torch.long)
    mean, logvar, _ = diffusion.p_mean_variance(torch.cat([eps, v], dim=1), x, t)
    if i == 0:
        return mean
    return mean + torch.exp(0.5 * logvar) * randn_per_image(x, generator).to(x.dtype)


@torch.no_grad()
def sample(model, noise: torch.Tensor, y: torch.Tensor, *, method: str = "ddpm", num_steps: int = 250,
           cfg_scale: float = 1.0, guidance_low: float = 0.0, guidance_high: float = 1.0,
           generator=None, cfg_channels: str = "dit") -> torch.Tensor:
    """x_0 from noise (N, C, H, W) and labels y (N,) by DDPM or DDIM on `num_steps` of the 1000 steps (ADM's even
    respacing, e.g. 250). `generator` (one, or one per image) drives the DDPM noise; DDIM is deterministic.
    `cfg_channels`: "dit" guides epsilon channels 0-2 only, as DiT's protocol (default); "all" guides every epsilon
    channel. Returns noise's dtype."""
    if method not in METHODS:
        raise ValueError(f"unknown sampling method {method!r}; choices: {', '.join(METHODS)}")
    if cfg_channels not in CFG_CHANNELS:
        raise ValueError(f"unknown cfg_channels {cfg_channels!r}; choices: {', '.join(CFG_CHANNELS)}")
    check_sampler_args(num_steps, cfg_scale, guidance_low, guidance_high)
    if num_steps > NUM_TIMESTEPS:
        raise ValueError(f"num_steps must be at most {NUM_TIMESTEPS} (got {num_steps})")
    diffusion = get_diffusion(int(num_steps))
    x = noise.double()
    guide = (cfg_scale, guidance_low, guidance_high, cfg_channels)
    for i in reversed(range(diffusion.num_timesteps)):
        eps, v = guided_output(model, x, int(diffusion.timestep_map[i]), y, *guide)
        x = ddim_step(diffusion, x, i, eps) if method == "ddim" else ddpm_step(diffusion, x, i, eps, v, generator)
    return x.to(noise.dtype)
