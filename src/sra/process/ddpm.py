"""The DDPM process of DiT: the 1000-step linear schedule (integer steps, t = 0 data side), epsilon prediction with
learned variance (MSE + variational bound), DDPM/DDIM on respaced steps and DiT's guidance protocol. The time
convention is stated once, in `ddpm_schedule`."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..models.export import export_dit_pipeline
from .base import pixel_map
from .ddpm_loss import diffusion_terms
from .ddpm_samplers import sample as ddpm_sample
from .ddpm_schedule import NUM_TIMESTEPS, get_diffusion


@dataclass(frozen=True, kw_only=True)
class DDPMConfig:
    """DiT's process has no options: the 1000-step linear schedule, epsilon with learned variance, as DiT trains."""


class DDPMProcess:
    """DiT's process; the model's time input is the step of the original 1000-step process."""

    name, title, learn_sigma = "ddpm", "DiT (DDPM)", True
    Config = DDPMConfig
    losses = ("denoise", "vb")
    modes, grid_mode, grid_name = ("ddpm", "ddim"), "ddim", "DDIM"
    sampler_options = ("cfg_channels",)  # the sampler settings of its own (`sra sample`/`generate` flags)
    # DiT's (Peebles & Xie 2023): 250 respaced DDPM steps, CFG 1.5 at every step.
    protocol = dict(mode="ddpm", num_steps=250, cfg_scale=1.5, guidance_low=0.0, guidance_high=1.0)
    time_axis = "DDPM step (0 = data)"
    clean_time = 0

    def __init__(self, config: DDPMConfig | None = None):
        self.config = config or DDPMConfig()
        self.diffusion = get_diffusion()  # all 1000 steps: the step index is the model's time input

    # -- time ------------------------------------------------------------------------------------------------------

    def model_time(self, t: float) -> int:
        """The step for t in [0, 1] on SiT's scale: round(1000 t), at most 999."""
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"timestep {t} outside [0, 1] (t = 0 is data, t = 1 is noise)")
        return min(int(round(NUM_TIMESTEPS * t)), NUM_TIMESTEPS - 1)

    def time_label(self, t: float) -> str:
        return f"step {self.model_time(t)}"

    def unit_time(self, t: torch.Tensor) -> torch.Tensor:
        """Training steps on the [0, 1] scale of time ranges (0 = data): step / 1000."""
        return t.float() / NUM_TIMESTEPS

    def draw_time(self, n: int, generator, device) -> torch.Tensor:
        return torch.randint(0, self.diffusion.num_timesteps, (n,), generator=generator, device=device)

    # -- the teacher's lower-noise view: t' = max(t - k, 1), k ~ U{0..floor(1000 t_max) - 1} ----------------------

    def offset_bound(self, t_max: float) -> int:
        return math.floor(self.diffusion.num_timesteps * t_max + 1e-9)

    def offset_from_uniform(self, interval: str, t_max: float, u: torch.Tensor) -> torch.Tensor:
        """Integer k for uniforms u in [0, 1): floor(K u) (uniform on 0..K-1), K (fixed) or 0 (none)."""
        k_max = self.offset_bound(t_max)
        if interval == "fixed":
            return torch.full(u.shape, k_max, dtype=torch.long, device=u.device)
        if interval == "none":
            return torch.zeros(u.shape, dtype=torch.long, device=u.device)
        return (u * max(k_max, 1)).floor().long().clamp(max=max(k_max, 1) - 1)

    def draw_offset(self, interval: str, t_max: float, t: torch.Tensor, generator) -> torch.Tensor:
        """Integer k >= 0 (N,): U{0..K-1} with K = floor(T t_max) (SRA's DiT code: randint(0, 200)), K itself
        ("fixed"), or 0 ("none"); drawn even when unused to keep the random stream the same across options."""
        k_max = self.offset_bound(t_max)
        k = torch.randint(0, max(k_max, 1), t.shape, generator=generator, device=t.device)
        if interval == "fixed":
            return torch.full_like(k, k_max)
        if interval == "none":
            return torch.zeros_like(k)
        return k

    def lower(self, t: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return (t - k).clamp(min=1)  # as SRA's DiT code: never the (almost clean) step 0

    # -- corruption, target, loss ----------------------------------------------------------------------------------

    def corrupt(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor,
                patch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, epsilon target) at steps t (N,), or per token (N, T): each patch noised at its token's step."""
        steps = t if t.ndim == 1 else pixel_map(t, patch_size)
        return self.diffusion.q_sample(x0, steps, noise), noise

    def loss(self, pred: torch.Tensor, target: torch.Tensor, x0, xt, t, patch_size=None) -> dict[str, torch.Tensor]:
        """{"denoise": epsilon MSE (N,), "vb": the bound term with the mean frozen (N,)}; with per-token steps each
        pixel's bound term is taken at its token's step."""
        steps = t if t.ndim == 1 else pixel_map(t, patch_size)
        return diffusion_terms(self.diffusion, pred, x0, xt, steps, target)

    def noisy(self, x0: torch.Tensor, noise: torch.Tensor, t: float) -> torch.Tensor:
        """x_t at the step of time t in [0, 1] (probes, PCA maps)."""
        steps = torch.full((x0.shape[0],), self.model_time(t), dtype=torch.long, device=x0.device)
        return self.diffusion.q_sample(x0, steps, noise)

    # -- sampling ----------------------------------------------------------------------------------------------------

    def sample(self, model, noise, y, *, mode: str, num_steps: int, cfg_scale: float = 1.0, guidance_low: float = 0.0,
               guidance_high: float = 1.0, cfg_channels: str = "dit", generator=None) -> torch.Tensor:
        """x_0 by DDPM or DDIM on `num_steps` respaced steps; guidance on epsilon as DiT's protocol."""
        return ddpm_sample(model, noise, y, method=mode, num_steps=num_steps, cfg_scale=cfg_scale,
                           guidance_low=guidance_low, guidance_high=guidance_high, generator=generator,
                           cfg_channels=cfg_channels)

    def grid_sample(self, model, noise, y, num_steps: int) -> torch.Tensor:
        """The training runs' own sampler (grids, in-training evaluation): DDIM, no guidance."""
        return self.sample(model, noise, y, mode=self.grid_mode, num_steps=num_steps)

    def guidance_note(self, cfg_channels: str) -> str:
        return " on epsilon channels 0-2" if cfg_channels == "dit" else ""

    # -- export --------------------------------------------------------------------------------------------------------

    def check_diffusers_export(self) -> None:
        """Nothing to refuse before the VAE is known: `export_dit_pipeline` refuses a pixel DiT (DiTPipeline always
        decodes through a VAE) once the run's VAE has been looked up, still before anything is written."""

    def export_diffusers(self, loaded, output, *, vae, latent_map):
        return export_dit_pipeline(loaded, output, vae=vae, latent_map=latent_map)
