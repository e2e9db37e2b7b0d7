"""Frozen external encoders for REPA (arXiv 2410.06940): images -> patch features (N, T_e, D_e) on the diffusion
model's token grid.

- A DINOv2 in a local folder, read with transformers' Dinov2Model (nothing downloads). As REPA's preprocessing: images
  to [0, 1], ImageNet mean/std normalisation, bicubic resize to (model grid side) x (encoder patch), so that the
  encoder's patch grid is the model's token grid (REPA: 224 px for SiT/2 on 256 px images); the patch tokens of the
  final layer-normed hidden states (CLS and register tokens dropped). The position table is resized once to that
  grid as REPA does (its utils.py: timm's `resample_abs_pos_embed`, bicubic with antialiasing, e.g. DINOv2's 37 x 37
  to 16 x 16), not by transformers' per-call `interpolate_pos_encoding` (no antialiasing).
- "fmnist": the project's Fashion-MNIST classifier (evaluation/fmnist.py), at CPU scale. Its convolutional body is
  applied to the whole padded 32x32 image; after its two 2x2 poolings that is an 8x8 grid of 64-d features, one per
  4x4 patch, the token grid of SiT-T/4.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DinoV2Encoder(nn.Module):
    def __init__(self, folder: str | Path):
        super().__init__()
        try:
            from transformers import Dinov2Model
        except ImportError:
            raise ValueError("a DINOv2 encoder needs transformers: pip install 'sra-diffusion[repa]'") from None
        try:
            self.net = Dinov2Model.from_pretrained(str(folder), local_files_only=True).eval().requires_grad_(False)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot load a DINOv2 from {folder}: {str(e).splitlines()[0]}") from None
        cfg = self.net.config
        self.patch_size, self.dim = cfg.patch_size, cfg.hidden_size
        self.skip = 1 + getattr(cfg, "num_register_tokens", 0)  # CLS (+ registers) come first
        self.name = f"dinov2:{Path(folder).resolve()}"
        self.table = self.net.embeddings.position_embeddings.detach().clone()  # as trained, (1, 1 + S^2, D)
        self.table_grid = round((self.table.shape[1] - 1) ** 0.5)

    def use_grid(self, grid: int) -> None:
        """Resize the trained position table to grid x grid patches, once per grid (nothing to do when it already
        is). transformers then uses the table as it is, since its size matches the input's patches."""
        if grid != self.table_grid:
            emb = self.net.embeddings.position_embeddings
            emb.data = resize_position_table(self.table.to(emb.device), grid)
            self.table_grid = grid

    def forward(self, images: torch.Tensor, grid: int) -> torch.Tensor:
        """images (N, C, H, W) in [-1, 1] (1 or 3 channels) -> (N, grid^2, D_e)."""
        x = (images.float() + 1) / 2
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        x = F.interpolate((x - mean) / std, size=grid * self.patch_size, mode="bicubic")
        self.use_grid(grid)
        return self.net(pixel_values=x).last_hidden_state[:, self.skip:]


def resize_position_table(table: torch.Tensor, grid: int) -> torch.Tensor:
    """A ViT position table (1, 1 + S^2, D) (the CLS entry first) resized to (1, 1 + grid^2, D): the S x S patch part
    by bicubic interpolation with antialiasing in float32, the CLS entry kept, as REPA's DINOv2 set-up."""
    side, dim = round((table.shape[1] - 1) ** 0.5), table.shape[-1]
    patches = table[:, 1:].float().reshape(1, side, side, dim).permute(0, 3, 1, 2)  # (1, D, S, S)
    patches = F.interpolate(patches, size=(grid, grid), mode="bicubic", antialias=True)
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid * grid, dim).to(table.dtype)
    return torch.cat([table[:, :1], patches], dim=1)


class FMNISTEncoder(nn.Module):
    """The body of the FD-FMNIST classifier up to its second pooling: (N, 64, H/4, W/4) -> tokens. `body`: the
    classifier's convolutional body, handed in by the caller (the classifier belongs to evaluation/)."""

    def __init__(self, body: nn.Sequential):
        super().__init__()
        self.net = nn.Sequential(*list(body)[:8]).eval().requires_grad_(False)  # conv-bn-relu-pool x 2
        self.patch_size, self.dim, self.name, self.channels = 4, body[4].out_channels, "fmnist", 1

    def forward(self, images: torch.Tensor, grid: int) -> torch.Tensor:
        if images.shape[1] != 1 or images.shape[-1] != 4 * grid:
            raise ValueError(f"the fmnist encoder takes 1-channel images of side {4 * grid} (got {tuple(images.shape)})")
        return self.net(images.float()).flatten(2).transpose(1, 2)  # (N, grid^2, 64)


def load_encoder(spec: str, device="cpu", classifier: nn.Sequential | None = None) -> nn.Module:
    """'fmnist' (with `classifier`, the FD-FMNIST classifier's body) or a local DINOv2 folder (a transformers save:
    config.json + weights)."""
    if spec == "fmnist":
        if classifier is None:
            raise ValueError("the fmnist encoder is the FD-FMNIST classifier; `sra train --repa-encoder fmnist` "
                             "trains or loads it (latent stores: use a DINOv2 folder)")
        return FMNISTEncoder(classifier).to(device)
    if not Path(spec).is_dir():
        raise ValueError(f"encoder {spec!r} is neither 'fmnist' nor a local folder")
    return DinoV2Encoder(spec).to(device)


@torch.no_grad()
def encode(encoder: nn.Module, images: torch.Tensor, grid: int) -> torch.Tensor:
    """Patch features (N, grid^2, D_e) in float32, without gradient."""
    return encoder(images, grid).float()
