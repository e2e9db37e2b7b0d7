"""Dispersive Loss (Wang & He, "Diffuse and Disperse", arXiv 2506.09027), the InfoNCE-L2 variant: the student's tokens
after one block, flattened per sample to z_i (D values), are pushed apart within the batch,

    L_disp = log( mean_{i,j} exp(-||z_i - z_j||^2 / (D tau)) )

over the full B x B matrix, its zero diagonal included. No positive pairs, no teacher, no parameters. The value is
one number per batch; every sample of the batch carries it, so that the batch mean that `combine` takes is the loss.
With gradient accumulation or several ranks, the batch is each micro-batch on each rank, as in the authors' code
(per device).

Defaults from the authors' public PyTorch code on SiT (their README's table: lambda 0.25, tau 1, depth = num_layers,
i.e. the output of the last block; their JAX runs of the paper: lambda 0.5, tau 0.5, depth = num_layers // 4, i.e.
block 1 of a 6-block model, 3 of 12).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..options import option
from .objective import register


@dataclass(frozen=True, kw_only=True)
class DispConfig:
    weight: float = option(0.0, flag="--disp-weight",
                           group="Dispersive Loss: spread the batch's block tokens apart (arXiv 2506.09027)",
                           help="dispersive weight lambda; 0: off (the authors' PyTorch code on SiT: 0.25)")
    block: int = option(0, flag="--disp-block",
                        help="tokens after this many blocks (1-indexed; 0: the last block, as the authors' PyTorch "
                             "code, which takes the output of the last block)")
    tau: float = option(1.0, flag="--disp-tau", help="temperature tau of exp(-d^2 / (D tau)), D the flattened size per "
                                                     "sample (the authors' PyTorch code: 1; their JAX runs: 0.5)")

    @property
    def active(self) -> bool:
        return self.weight > 0

    def validate(self, depth: int) -> None:
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"--disp-weight must be a finite number >= 0 (got {self.weight})")
        if not (math.isfinite(self.tau) and self.tau > 0):
            raise ValueError(f"--disp-tau must be a finite number > 0 (got {self.tau})")
        if self.active and not 1 <= self.block <= depth:
            raise ValueError(f"dispersive block {self.block} outside the model's 1..{depth} blocks")


def dispersive_loss(tokens: torch.Tensor, tau: float = 1.0) -> torch.Tensor:
    """log(mean_{i,j} exp(-||z_i - z_j||^2 / (D tau))) for tokens (B, ...) flattened to z (B, D), in float32.

    The B (B - 1) / 2 distances of distinct pairs by `pdist`, from the differences themselves as the authors compute
    them (a Gram-matrix form ||z_i||^2 + ||z_j||^2 - 2 z_i.z_j cancels: on small tokens it was 3.3e-7 off a float64
    reference where this is 2.4e-11 off, tests/test_dispersive_precision.py), each counted twice with the B zeros of
    the diagonal for the full B x B matrix. The
    log-mean-exp: where the tokens are close (mean of exp(x) - 1 above -1/2), log1p(mean(expm1(x))), which keeps the
    small loss's digits (log(mean(exp)) in float32 rounds the mean near 1 to 6e-8); elsewhere logsumexp, stable for
    any scale."""
    z = tokens.float().flatten(1)
    b, d = z.shape
    pairs = -F.pdist(z).pow(2) / (d * tau)  # (B (B - 1) / 2,)
    full = torch.cat([pairs, pairs, torch.zeros(b, device=z.device, dtype=z.dtype)])
    u = torch.expm1(full).mean()  # mean(exp(x)) - 1, in (-1, 0]
    return torch.where(u > -0.5, torch.log1p(u), torch.logsumexp(full, 0) - math.log(b * b))


@register
class Dispersive:
    """The dispersive term "disp" (N,): the batch's loss, carried by every sample. No parameters."""

    name = "disp"
    Config = DispConfig
    unset = DispConfig()
    student_parts = ()
    # `sra bench --methods dispersive`: the authors' PyTorch setting (weight 0.25 on the last block)
    bench, bench_name = dict(weight=0.25), "dispersive"

    @staticmethod
    def resolve(cfg: DispConfig, preset) -> DispConfig:
        # unset block: the last one, as the authors' PyTorch code (an inactive term keeps its 0)
        return dataclasses.replace(cfg, block=cfg.block or preset.depth) if cfg.active else cfg

    @staticmethod
    def validate(cfg: DispConfig, spec) -> None:
        cfg.validate(spec.model_depth)

    def __init__(self, cfg: DispConfig, objective, resources: dict):
        self.cfg, self.depth, self.module = cfg, cfg.block, None

    def weight(self, epoch: int, input_size: int) -> float:
        return self.cfg.weight

    def __call__(self, b) -> torch.Tensor:
        h = b.tokens[self.depth]
        return dispersive_loss(h, self.cfg.tau).expand(h.shape[0])
