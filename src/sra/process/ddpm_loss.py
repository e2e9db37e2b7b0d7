"""DiT's training loss for epsilon prediction with learned variance (ADM "hybrid", DiT's loss type MSE):
L = mean((eps_pred - eps)^2) + L_vb, where L_vb is the variational-bound term at step t in bits per dimension,
computed with the predicted MEAN frozen (stop-gradient) so that it trains the variance only (Nichol & Dhariwal,
Sec. 3.1). DiT applies no 1/1000 rescale to L_vb (that is ADM's RESCALED_MSE, not used by DiT).
"""
from __future__ import annotations

import math

import torch

from .ddpm_schedule import Diffusion

LOG2 = math.log(2.0)


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1)


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """Elementwise KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) in nats."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation of Phi used by ADM/DiT (kept for identical decoder likelihoods)."""
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """log P(bin of x) under N(means, e^(2 log_scales)) for data in [-1, 1] quantised to 256 levels (bin width 2/255);
    the edge bins extend to +-infinity (Ho et al. 2020, Eq. 13). Elementwise, in nats."""
    centered = x - means
    inv_std = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_std * (centered + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_std * (centered - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))


def vb_bits_per_dim(diffusion: Diffusion, out: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor,
                    t: torch.Tensor) -> torch.Tensor:
    """Per-sample (N,) bound term for model output `out` = (eps, v): KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))
    for t > 0 and the decoder NLL -log p(x_0 | x_1) for t = 0, in bits per dimension. t (N,) is one step per
    sample; t (N, 1, H, W) one step per pixel (token groups): each element's term at its own step, then the mean."""
    true_mean, true_logvar = diffusion.q_posterior(x0, xt, t)
    mean, logvar, _ = diffusion.p_mean_variance(out, xt, t)
    if t.ndim > 1:
        kl = normal_kl(true_mean, true_logvar, mean, logvar)
        nll = -discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar)
        return mean_flat(torch.where(t == 0, nll, kl)) / LOG2
    kl = mean_flat(normal_kl(true_mean, true_logvar, mean, logvar)) / LOG2
    nll = -mean_flat(discretized_gaussian_log_likelihood(x0, mean, 0.5 * logvar)) / LOG2
    return torch.where(t == 0, nll, kl)


def diffusion_terms(diffusion: Diffusion, out: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
                    noise: torch.Tensor) -> dict[str, torch.Tensor]:
    """{"denoise": MSE of the epsilon half (N,), "vb": bound term with the mean frozen (N,)}, in float32."""
    out, x0, xt = out.float(), x0.float(), xt.float()
    c = x0.shape[1]
    eps, v = out[:, :c], out[:, c:]
    frozen = torch.cat([eps.detach(), v], dim=1)  # the bound term may move the variance, not the mean
    return {"denoise": mean_flat((eps - noise.float()) ** 2), "vb": vb_bits_per_dim(diffusion, frozen, x0, xt, t)}
