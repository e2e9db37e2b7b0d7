"""REPA (arXiv 2410.06940): the student's tokens after block s, through an MLP projector, are aligned to the patch
features of a frozen external encoder of the clean image: per sample the mean over tokens of -cos(proj(h)_i, z_i)
(REPA's `proj_loss`, weight 0.5 there). SRA replaces the external encoder by the model's own EMA; both can be on."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..options import option
from .objective import register

@dataclass(frozen=True, kw_only=True)
class RepaConfig:
    weight: float = option(0.0, flag="--repa-weight", group="REPA: alignment to a frozen external encoder",
                           help="REPA's lambda; 0: off (REPA's train.py --proj-coeff default, and its README's "
                                "command: 0.5)")
    encoder: str | None = option(None, flag="--repa-encoder", metavar="DIR",
                                 help="'fmnist' (the FD-FMNIST classifier) or a local DINOv2 folder (transformers); "
                                      "latent stores need the features stored by `sra prepare --encoder`")
    block: int = option(0, flag="--repa-block", help="student tokens after this many blocks (their --encoder-depth; "
                                                     "0: 8 for L/XL as REPA's train.py default, 4 for S/B as the "
                                                     "REPA paper's SiT-B, 2 for the tiny preset)")
    projector_dim: int = option(2048, help="hidden width of REPA's MLP projector (REPA's models/sit.py default 2048)")

    @property
    def active(self) -> bool:
        return self.weight > 0

    def validate(self, depth: int) -> None:
        if not self.active:
            return
        if not self.encoder:
            raise ValueError("REPA needs an encoder: --repa-encoder fmnist or a local DINOv2 folder")
        if not 1 <= self.block <= depth:
            raise ValueError(f"REPA block {self.block} outside the model's 1..{depth} blocks")
        if self.projector_dim < 1:
            raise ValueError(f"projector width must be positive (got {self.projector_dim})")


def repa_term(projected: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """Per-sample (N,) mean over tokens of the negative cosine similarity between projected student tokens (N, T, D_z)
    and encoder features (N, T, D_z)."""
    if projected.shape != features.shape:
        raise ValueError(f"projected tokens {tuple(projected.shape)} and encoder features {tuple(features.shape)} differ "
                         "(the encoder's patch grid must be the model's token grid)")
    p, z = F.normalize(projected.float(), dim=-1), F.normalize(features.float(), dim=-1)
    return -(p * z).sum(-1).mean(1)


def repa_projector(hidden_size: int, projector_dim: int, z_dim: int) -> nn.Sequential:
    """REPA's MLP projector (arXiv 2410.06940): Linear(D, P) -> SiLU -> Linear(P, P) -> SiLU -> Linear(P, z_dim),
    initialised as the backbone's linears (xavier uniform, zero bias). An nn.Sequential as in REPA's code, so that its
    parameters are named {0,2,4}.{weight,bias} (REPA's `projectors.0.*`)."""
    net = nn.Sequential(nn.Linear(hidden_size, projector_dim), nn.SiLU(), nn.Linear(projector_dim, projector_dim),
                        nn.SiLU(), nn.Linear(projector_dim, z_dim))
    for m in net:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return net


@register
class REPA:
    """The REPA term "repa" (N,). It owns its projector (a module of the objective, not of the backbone). Resources:
    `encoder`, a callable clean inputs -> patch features on the model's token grid (N, T, D_e), run when the features
    are not stored with the data (built outside the objective and passed in); `z_dim`, the features' size;
    `hidden_size`, the student's token width."""

    name = "repa"
    Config = RepaConfig
    unset = RepaConfig()
    student_parts = ()
    # `sra bench --methods repa`: features as if stored (no encoder forward), the preset's block and projector
    bench = dict(weight=0.5, encoder="stored features")

    @staticmethod
    def resolve(cfg: RepaConfig, preset) -> RepaConfig:
        # an inactive term keeps its 0: run configs stay comparable whatever the table says
        return dataclasses.replace(cfg, block=cfg.block or preset.row.repa_block) if cfg.active else cfg

    @staticmethod
    def encoder_of(cfg: RepaConfig) -> str:
        """The external encoder whose features this term aligns to ('fmnist' or a DINOv2 folder)."""
        return cfg.encoder

    @staticmethod
    def validate(cfg: RepaConfig, spec) -> None:
        if not (math.isfinite(cfg.weight) and cfg.weight >= 0):  # nan switched REPA off silently
            raise ValueError(f"--repa-weight must be a finite number >= 0 (got {cfg.weight})")
        cfg.validate(spec.model_depth)

    def __init__(self, cfg: RepaConfig, objective, resources: dict):
        self.cfg, self.encoder, self.depth = cfg, resources.get("encoder"), cfg.block
        if resources.get("z_dim") is None or resources.get("hidden_size") is None:
            raise ValueError("REPA needs its encoder's feature size and the model's width to build its projector")
        self.module = repa_projector(resources["hidden_size"], cfg.projector_dim, resources["z_dim"])

    def weight(self, epoch: int, input_size: int) -> float:
        return self.cfg.weight

    def __call__(self, b) -> torch.Tensor:
        features = b.features if b.features is not None else self.encoder(b.x0)
        h = b.tokens[self.depth]
        return repa_term(self.module(h), features.to(h.device))
