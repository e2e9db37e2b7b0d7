"""Interpolant paths and training-time distributions for SiT (flow matching).

Time convention (the one place it is stated): t in [0, 1], t = 0 is data, t = 1 is noise, and the model's timestep
embedder receives t itself, as the released SiT/SRA checkpoints were trained:
    x_t = alpha_t * x0 + sigma_t * eps,      target velocity v = d_alpha_t * x0 + d_sigma_t * eps.
"""
from __future__ import annotations

import math

import torch

PATHS = ("linear", "cosine")
TIME_SAMPLINGS = ("uniform", "lognormal")


def path_coefficients(path: str, t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(alpha, sigma, d_alpha/dt, d_sigma/dt) at t; linear: (1-t, t), cosine: (cos(pi t/2), sin(pi t/2))."""
    if path == "linear":
        return 1 - t, t, -torch.ones_like(t), torch.ones_like(t)
    if path == "cosine":
        a = t * (math.pi / 2)
        return torch.cos(a), torch.sin(a), -(math.pi / 2) * torch.sin(a), (math.pi / 2) * torch.cos(a)
    raise ValueError(f"unknown path {path!r}; choices: {', '.join(PATHS)}")


def expand_like(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N, 1, 1, ...) broadcastable against x."""
    return t.reshape(-1, *([1] * (x.ndim - 1)))


def interpolate(path: str, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x_t and the velocity target at per-sample times t (N,)."""
    alpha, sigma, d_alpha, d_sigma = (expand_like(c, x0) for c in path_coefficients(path, t))
    return alpha * x0 + sigma * noise, d_alpha * x0 + d_sigma * noise


def sample_time(kind: str, path: str, n: int, generator: torch.Generator | None = None, device=None,
                mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """Training times (n,): uniform on [0, 1], or log-normal sigma = exp(mean + std N(0, 1)) mapped to the path's t
    (EDM; SiT-SRA and REPA use mean 0, std 1, SiT-SRA_DTS_AS's loss.py 0.847 and 0.8)."""
    if kind == "uniform":
        return torch.rand(n, generator=generator, device=device)
    if kind == "lognormal":
        z = torch.randn(n, generator=generator, device=device)
        sigma = (z if (mean, std) == (0.0, 1.0) else mean + std * z).exp()
        return sigma / (1 + sigma) if path == "linear" else (2 / math.pi) * torch.atan(sigma)
    raise ValueError(f"unknown time sampling {kind!r}; choices: {', '.join(TIME_SAMPLINGS)}")
