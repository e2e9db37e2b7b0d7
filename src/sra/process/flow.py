"""The flow-matching process of SiT: an interpolant path from data (t = 0) to noise (t = 1), velocity regression, and
the ODE/SDE samplers with the guidance interval. The time convention is stated once, in `flow_path`.

Prediction types (`FlowConfig.prediction`): the network outputs the velocity (SiT), or the clean image x (JiT, Li & He,
arXiv 2511.13720), which is converted to a velocity through the path for the loss and for every sampler:
    v(x_hat) = d_alpha x_hat + d_sigma (x_t - alpha x_hat) / max(sigma, X_SIGMA_MIN),
the same conversion applied to the true x0 giving the target (JiT clamps the denominator the same way, 1 - t >= 0.05 in
its convention where t = 1 is data). Where sigma >= X_SIGMA_MIN the target is exactly the velocity of velocity runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..models.export import export_sit_pipeline
from ..options import option
from .base import pixel_map
from .flow_path import PATHS, TIME_SAMPLINGS, expand_like, interpolate, path_coefficients, sample_time
from .flow_samplers import euler_maruyama_sampler, euler_sampler

PREDICTIONS = ("velocity", "x")
X_SIGMA_MIN = 0.05  # JiT's t_eps: the smallest noise level the x -> velocity conversion divides by


@dataclass(frozen=True, kw_only=True)
class FlowConfig:
    path: str = option("linear", flag="--path-type", choices=PATHS, group="process",
                       help="flow process: interpolant, linear (alpha, sigma = 1 - t, t) or cosine (cos, sin of pi t / 2)")
    time_sampling: str = option("uniform", flag="--weighting", choices=TIME_SAMPLINGS,
                                help="flow process: training-time distribution, uniform or lognormal (EDM sigma = "
                                     "exp(N(0, 1)))")
    lognormal_mean: float = option(0.0, help="flow process: mean of log sigma with --weighting lognormal (SiT-SRA "
                                               "and REPA: 0; SiT-SRA_DTS_AS loss.py SRALoss(mu=0.847))")
    lognormal_std: float = option(1.0, help="flow process: std of log sigma with --weighting lognormal (SiT-SRA and "
                                            "REPA: 1; SiT-SRA_DTS_AS loss.py SRALoss(std=0.8))")
    prediction: str = option("velocity", choices=PREDICTIONS,
                             help="flow process: what the network outputs, the velocity (SiT) or x, the clean image "
                                  "(JiT), converted to a velocity for the velocity loss and the samplers")


    def validate(self) -> None:
        if not self.lognormal_std > 0:
            raise ValueError(f"--lognormal-std must be > 0 (got {self.lognormal_std})")


class VelocityOfX(nn.Module):
    """An x-predicting model seen as a velocity model (for the samplers): same call, same attributes they read."""

    def __init__(self, model: nn.Module, path: str):
        super().__init__()
        self.model, self.path = model, path
        self.num_classes = model.num_classes

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x_to_velocity(self.path, self.model(x, t, y).to(x.dtype), x, t)


def x_to_velocity(path: str, x_hat: torch.Tensor, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The velocity of a clean-image estimate x_hat at x_t and times t ((N,) or per pixel (N, 1, H, W))."""
    alpha, sigma, d_alpha, d_sigma = (expand_like(c, xt) if t.ndim == 1 else c for c in path_coefficients(path, t))
    return d_alpha * x_hat + d_sigma * (xt - alpha * x_hat) / sigma.clamp_min(X_SIGMA_MIN)


class FlowProcess:
    """SiT's process, configured by a `FlowConfig` (path, training times, prediction)."""

    name, title, learn_sigma = "flow", "SiT (flow matching)", False
    Config = FlowConfig
    losses = ("denoise",)              # the per-sample terms `loss` returns (weight 1 each)
    modes, grid_mode, grid_name = ("ode", "sde"), "ode", "Euler ODE"
    sampler_options = ("heun", "sde_diffusion")  # the sampler settings of its own (`sra sample`/`generate` flags)
    # The authors' evaluation protocol (SRA, REPA; ImageNet 256 px, SiT-XL/2): SDE, 250 steps, CFG 1.8 in [0, 0.7].
    protocol = dict(mode="sde", num_steps=250, cfg_scale=1.8, guidance_low=0.0, guidance_high=0.7)
    time_axis = "t (0 = data)"
    clean_time = 0.0

    def __init__(self, config: FlowConfig | None = None):
        self.config = config or FlowConfig()
        self.path, self.time_sampling = self.config.path, self.config.time_sampling

    # -- time ------------------------------------------------------------------------------------------------------

    def model_time(self, t: float) -> float:
        """What the timestep embedder receives at t in [0, 1]: t itself."""
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"timestep {t} outside [0, 1] (t = 0 is data, t = 1 is noise)")
        return t

    def time_label(self, t: float) -> str:
        return f"t={t:g}"

    def unit_time(self, t: torch.Tensor) -> torch.Tensor:
        """Training times on the [0, 1] scale of time ranges (0 = data): t itself."""
        return t

    def draw_time(self, n: int, generator, device) -> torch.Tensor:
        c = self.config
        return sample_time(self.time_sampling, self.path, n, generator=generator, device=device,
                           mean=c.lognormal_mean, std=c.lognormal_std)

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
        the velocity are pointwise in t, so this is the interpolant at a per-pixel time). With x-prediction the
        target is the conversion of x0 (module docstring), the true velocity wherever sigma >= X_SIGMA_MIN."""
        if t.ndim == 1:
            xt, v = interpolate(self.path, x0, noise, t)
        else:
            t = pixel_map(t, patch_size)
            alpha, sigma, d_alpha, d_sigma = path_coefficients(self.path, t)
            xt, v = alpha * x0 + sigma * noise, d_alpha * x0 + d_sigma * noise
        if self.config.prediction == "x":
            v = x_to_velocity(self.path, x0, xt, t)
        return xt, v

    def loss(self, pred: torch.Tensor, target: torch.Tensor, x0, xt, t, patch_size=None) -> dict[str, torch.Tensor]:
        """{"denoise": mean squared velocity error (N,)} in float32; an x-prediction is converted first."""
        pred = pred.float()
        if self.config.prediction == "x":
            pred = x_to_velocity(self.path, pred, xt.float(), t if t.ndim == 1 else pixel_map(t, patch_size))
        return {"denoise": ((pred - target) ** 2).flatten(1).mean(1)}

    def noisy(self, x0: torch.Tensor, noise: torch.Tensor, t: float) -> torch.Tensor:
        """x_t at one time t in [0, 1] (probes, PCA maps)."""
        return interpolate(self.path, x0, noise, torch.full((x0.shape[0],), float(t), device=x0.device))[0]

    # -- sampling ----------------------------------------------------------------------------------------------------

    def velocity_model(self, model):
        """The model as the samplers call it: itself for velocity prediction, converted for x-prediction."""
        return VelocityOfX(model, self.path) if self.config.prediction == "x" else model

    def sample(self, model, noise, y, *, mode: str, num_steps: int, cfg_scale: float = 1.0, guidance_low: float = 0.0,
               guidance_high: float = 1.0, heun: bool = False, sde_diffusion: str = "t", generator=None) -> torch.Tensor:
        """x_0 by the probability-flow ODE (Euler/Heun) or the reverse SDE (Euler-Maruyama), guidance on the
        velocity inside [guidance_low, guidance_high] (for x-prediction the same as guiding x, the conversion being
        affine in x at fixed x_t)."""
        kw = dict(num_steps=num_steps, cfg_scale=cfg_scale, guidance_low=guidance_low, guidance_high=guidance_high)
        model = self.velocity_model(model)
        if mode == "sde":
            return euler_maruyama_sampler(model, noise, y, path_type=self.path, generator=generator,
                                          diffusion_form=sde_diffusion, **kw)
        return euler_sampler(model, noise, y, heun=heun, **kw)

    def grid_sample(self, model, noise, y, num_steps: int) -> torch.Tensor:
        """The training runs' own sampler (grids, in-training evaluation): Euler ODE, no guidance."""
        return self.sample(model, noise, y, mode=self.grid_mode, num_steps=num_steps)

    def guidance_note(self, cfg_channels: str) -> str:
        return ""

    # -- export --------------------------------------------------------------------------------------------------------

    def check_diffusers_export(self) -> None:
        if self.config.prediction != "velocity":
            raise ValueError(f"the diffusers SiT pipeline samples velocity models; this one predicts "
                             f"{self.config.prediction} (export it with --format safetensors)")

    def export_diffusers(self, loaded, output, *, vae, latent_map):
        """A folder with its own pipeline (diffusers has no SiT): the path its SDE needs comes from this process."""
        self.check_diffusers_export()
        return export_sit_pipeline(loaded, output, vae=vae, latent_map=latent_map, path_type=self.path)
