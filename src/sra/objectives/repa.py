"""REPA (arXiv 2410.06940): the student's tokens after block s, through an MLP projector, are aligned to the patch
features of a frozen external encoder of the clean image: per sample the mean over tokens of -cos(proj(h)_i, z_i)
(REPA's `proj_loss`, weight 0.5 there). SRA replaces the external encoder by the model's own EMA; both can be on."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..options import option

@dataclass(kw_only=True)
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


def repa_alignment(student, h: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """The REPA term (N,) through the plain module's first projector."""
    return repa_term(student.projectors[0](h), features.to(h.device))


class REPA:
    """The REPA term "repa" (N,). `encoder`: a callable clean inputs -> patch features on the model's token grid
    (N, T, D_e), run when the features are not stored with the data; built outside the objective and passed in."""

    name = "repa"

    def __init__(self, cfg: RepaConfig, encoder=None):
        self.cfg, self.encoder = cfg, encoder
        self.active, self.depth = cfg.active, cfg.block

    def weight(self, epoch: int, input_size: int) -> float:
        return self.cfg.weight

    def __call__(self, b) -> torch.Tensor:
        features = b.features if b.features is not None else self.encoder(b.x0)
        return repa_alignment(b.student, b.tokens[self.depth], features)
