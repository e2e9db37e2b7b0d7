"""Images in [-1, 1] to uint8 and to PNG grids."""
from __future__ import annotations

import os

import numpy as np
import torch


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8; 1-channel images become 3-channel only on request elsewhere."""
    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def make_grid(images: np.ndarray, nrow: int, pad: int = 2, fill: int = 255) -> np.ndarray:
    """(N, H, W, C) uint8 -> one (rows*(H+pad)+pad, nrow*(W+pad)+pad, C) image, row-major."""
    n, h, w, c = images.shape
    rows = (n + nrow - 1) // nrow
    out = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), fill, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, nrow)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = images[i]
    return out


def save_grid(x: torch.Tensor, path: str | os.PathLike, nrow: int, scale: int = 1) -> None:
    """Save images (N, C, H, W) in [-1, 1] as a PNG grid, optionally upscaled (nearest) for small images."""
    from PIL import Image

    grid = make_grid(to_uint8(x), nrow)
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    tmp = f"{path}.tmp.png"
    img.save(tmp)
    os.replace(tmp, path)
