"""The flow-matching process of SiT: an interpolant path from data (t = 0) to noise (t = 1), velocity regression, and
the ODE/SDE samplers with the guidance interval. The time convention is stated once, in `flow_path`."""
from __future__ import annotations

import torch

from .base import pixel_map
from .flow_path import interpolate, path_coefficients, sample_time
from .flow_samplers import euler_maruyama_sampler, euler_sampler


class FlowProcess:
    """SiT's process. `path`: linear or cosine interpolant; `time_sampling`: uniform or log-normal training times."""

    name, family, learn_sigma = "flow", "SiT", False
    losses = ("denoise",)              # the per-sample terms `loss` returns (weight 1 each)
    config_sections = ("flow",)        # the TrainConfig sections this process reads
    modes, grid_mode, grid_name = ("ode", "sde"), "ode", "Euler ODE"
    # The authors' evaluation protocol (SRA, REPA; ImageNet 256 px, SiT-XL/2): SDE, 250 steps, CFG 1.8 in [0, 0.7].
    protocol = dict(mode="sde", num_steps=250, cfg_scale=1.8, guidance_low=0.0, guidance_high=0.7)
    time_axis = "t (0 = data)"
    clean_time = 0.0

    def __init__(self, path: str = "linear", time_sampling: str = "uniform"):
        self.path, self.time_sampling = path, time_sampling

    # -- time ------------------------------------------------------------------------------------------------------

    def model_time(self, t: float) -> float:
        """What the timestep embedder receives at t in [0, 1]: t itself."""
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"timestep {t} outside [0, 1] (t = 0 is data, t = 1 is noise)")
        return t

    def time_label(self, t: float) -> str:
        return f"t={t:g}"

    def draw_time(self, n: int, generator, device) -> torch.Tensor:
        return sample_time(self.time_sampling, self.path, n, generator=generator, device=device)

    # -- the teacher's lower-noise view: t' = clamp(t - k, 0, 1), k ~ U(0, t_max) ------------------------------------

    def offset_from_uniform(self, interval: str, t_max: float, u: torch.Tensor) -> torch.Tensor:
        """k for uniforms u in [0, 1): t_max u (uniform interval), t_max (fixed) or 0 (none)."""
        if interval == "uniform":
            return t_max * u
        if interval == "fixed":
            return torch.full_like(u, t_max)
        return torch.zeros_like(u)

    def draw_offset(self, interval: str, t_max: float, t: torch.Tensor, generator) -> torch.Tensor:
        """k >= 0 per sample, drawn even when unused so that every option keeps the same random stream."""
        u = torch.rand(t.shape, generator=generator, device=t.device, dtype=t.dtype)
        return self.offset_from_uniform(interval, t_max, u)

    def lower(self, t: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return (t - k).clamp(0.0, 1.0)

    # -- corruption, target, loss ----------------------------------------------------------------------------------

    def corrupt(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                patch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, velocity target) at times t (N,), or per token (N, T) with each patch at its token's time (x_t and
        the velocity are pointwise in t, so this is the interpolant at a per-pixel time)."""
        if t.ndim == 1:
            return interpolate(self.path, x0, noise, t)
        alpha, sigma, d_alpha, d_sigma = path_coefficients(self.path, pixel_map(t, patch_size))
        return alpha * x0 + sigma * noise, d_alpha * x0 + d_sigma * noise

    def loss(self, pred: torch.Tensor, target: torch.Tensor, x0, xt, t, patch_size=None) -> dict[str, torch.Tensor]:
        """{"denoise": mean squared velocity error (N,)} in float32."""
        return {"denoise": ((pred.float() - target) ** 2).flatten(1).mean(1)}

    def noisy(self, x0: torch.Tensor, noise: torch.Tensor, t: float) -> torch.Tensor:
        """x_t at one time t in [0, 1] (probes, PCA maps)."""
        return interpolate(self.path, x0, noise, torch.full((x0.shape[0],), float(t), device=x0.device))[0]

    # -- sampling ----------------------------------------------------------------------------------------------------

    def sample(self, model, noise, y, *, mode: str, num_steps: int, cfg_scale: float = 1.0, guidance_low: float = 0.0,
               guidance_high: float = 1.0, heun: bool = False, sde_diffusion: str = "t", generator=None,
               **_) -> torch.Tensor:
        """x_0 by the probability-flow ODE (Euler/Heun) or the reverse SDE (Euler-Maruyama), guidance on the
        velocity inside [guidance_low, guidance_high]."""
        kw = dict(num_steps=num_steps, cfg_scale=cfg_scale, guidance_low=guidance_low, guidance_high=guidance_high)
        if mode == "sde":
            return euler_maruyama_sampler(model, noise, y, path_type=self.path, generator=generator,
                                          diffusion_form=sde_diffusion, **kw)
        return euler_sampler(model, noise, y, heun=heun, **kw)

    def grid_sample(self, model, noise, y, num_steps: int) -> torch.Tensor:
        """The training runs' own sampler (grids, in-training evaluation): Euler ODE, no guidance."""
        return self.sample(model, noise, y, mode=self.grid_mode, num_steps=num_steps)

    def guidance_note(self, cfg_channels: str) -> str:
        return ""
