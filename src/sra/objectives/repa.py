"""REPA (arXiv 2410.06940): the student's tokens after block s, through an MLP projector, are aligned to the patch
features of a frozen external encoder of the clean image: per sample the mean over tokens of -cos(proj(h)_i, z_i)
(REPA's `proj_loss`, weight 0.5 there). SRA replaces the external encoder by the model's own EMA; both can be on."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..options import option

# REPA's student block (their --encoder-depth) per model size, and where each default comes from (sihyun-yu/REPA as
# this project's reference index stores it, @67f7145).
REPA_BLOCKS = {"T": 2, "S": 4, "B": 4, "L": 8, "XL": 8}
REPA_DEFAULTS_FROM = {
    "weight": "ours: 0 (off), REPA is opt-in here; REPA train.py line 436 --proj-coeff default 0.5 (README.md's "
              "command passes --proj-coeff=0.5): the value to turn it on with",
    "block L/XL": "REPA train.py line 400 --encoder-depth default 8 (README.md's SiT-XL/2 command passes 8)",
    "block S/B": "4: the REPA paper's SiT-B/2 setting (paper, not re-checked); train.py's default 8 is 2/3 of SiT-B's "
                 "12 blocks",
    "block T": "ours: 2 of the tiny preset's 6 blocks (a third, as 4 of SiT-B's 12)",
    "projector_dim": "REPA models/sit.py line 180: SiT(..., projector_dim=2048)",
}


@dataclass(kw_only=True)
class RepaConfig:
    weight: float = option(0.0, flag="--repa-weight", group="REPA: alignment to a frozen external encoder (SiT)",
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


def feature_source(cfg: RepaConfig, dataset, grid: int, device) -> tuple[int, object | None]:
    """(feature size D_e, encoder to run on each batch or None). A latent store with stored features hands them over
    with every batch (training runs no encoder); pixel data runs the encoder on the clean images; latents without
    stored features cannot be encoded at train time (no images), which is one clear error."""
    from pathlib import Path

    info = getattr(dataset, "feature_info", None)
    if info:
        same = info["encoder"] == cfg.encoder or (Path(cfg.encoder).is_dir() and
                                                  info["encoder"] == f"dinov2:{Path(cfg.encoder).resolve()}")
        if not same:
            raise ValueError(f"the data's stored features come from {info['encoder']}, not {cfg.encoder}")
        if info["grid"] != grid:
            raise ValueError(f"the data's stored features are on a {info['grid']}x{info['grid']} grid but the model has "
                             f"{grid}x{grid} tokens (sra prepare --encoder-grid {grid})")
        dataset.with_features = True
        return int(info["dim"]), None
    if hasattr(dataset, "unnormalize"):  # a latent dataset: the images are not at hand during training
        raise ValueError(f"REPA on latents needs the encoder's features in the store: `sra prepare ... --encoder "
                         f"{cfg.encoder}` (then train on that store)")
    from ..models.encoders import load_encoder

    encoder = load_encoder(cfg.encoder, device)
    return int(encoder.dim), encoder
