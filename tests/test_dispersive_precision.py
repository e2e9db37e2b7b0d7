"""Dispersive Loss keeps float32 precision on small tokens: distances from the differences (the authors' `pdist`),
not from a Gram matrix, whose cancellation lost about 1e-7 absolute where the reference keeps 1e-8."""
import math

import torch
import torch.nn.functional as F

from sra.objectives.dispersive import dispersive_loss


def reference_float64(z: torch.Tensor, tau: float) -> float:
    """Disperse-Loss README `disp_loss` (pdist, squared, / D, the full B x B matrix) in float64, with tau."""
    z = z.double().reshape(z.shape[0], -1)
    diff = F.pdist(z).pow(2) / z.shape[1]
    diff = torch.cat((diff, diff, torch.zeros(z.shape[0], dtype=torch.float64)))
    return float(torch.log(torch.exp(-diff / tau).mean()))


def gram_form(z: torch.Tensor, tau: float) -> float:
    z = z.float().flatten(1)
    b, d = z.shape
    sq = z.pow(2).sum(1)
    dist = (sq[:, None] + sq[None, :] - 2 * z @ z.T).clamp_min(0) * (1 - torch.eye(b))
    return float(torch.logsumexp((-dist / (d * tau)).flatten(), 0) - math.log(b * b))


def test_small_tokens_keep_float32_precision():
    g = torch.Generator().manual_seed(0)
    z = (torch.randn(32, 16, 64, generator=g) * 1e-2 + 3.0).float()  # small spread around a large mean
    exact = reference_float64(z, 0.5)
    assert abs(float(dispersive_loss(z, 0.5)) - exact) < 2e-8
    assert abs(gram_form(z, 0.5) - exact) > 10 * abs(float(dispersive_loss(z, 0.5)) - exact)  # what it replaced
