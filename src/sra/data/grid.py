"""Images in [-1, 1] to uint8 (the one conversion, see `to_uint8`) and to PNG grids."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


ROUNDINGS = ("floor", "nearest")


def to_uint8(x: torch.Tensor, rounding: str = "floor") -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8; 1-channel images become 3-channel only on request elsewhere.

    rounding="floor" (default, for evaluation outputs) is the authors' and DiT/SiT/REPA's conversion:
    clamp(255 * (x + 1) / 2, 0, 255) in float32, then a cast to uint8, which truncates. Samples compared with the
    papers' FIDs must be quantised so: rounding instead lifts every pixel by half a level on average.
    rounding="nearest" rounds to the nearest level (preview grids, and FD-FMNIST, whose recorded numbers use it)."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}; choices: {', '.join(ROUNDINGS)}")
    x = x.float()
    if rounding == "floor":
        x = torch.clamp(255.0 * ((x + 1) / 2), 0, 255)  # this order of float32 ops, as the reference writes it
    else:
        x = ((x.clamp(-1, 1) + 1) * 127.5).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def make_grid(images: np.ndarray, nrow: int, pad: int = 2, fill: int = 255) -> np.ndarray:
    """(N, H, W, C) uint8 -> one (rows*(H+pad)+pad, nrow*(W+pad)+pad, C) image, row-major."""
    n, h, w, c = images.shape
    rows = (n + nrow - 1) // nrow
    out = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), fill, dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, nrow)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + k * (w + pad): pad + k * (w + pad) + w] = images[i]
    return out


def save_grid(x: torch.Tensor, path: str | Path, nrow: int, scale: int = 1) -> None:
    """Save images (N, C, H, W) in [-1, 1] as a PNG grid, optionally upscaled (nearest) for small images."""
    from PIL import Image

    grid = make_grid(to_uint8(x, "nearest"), nrow)
    img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    from ..runfolder import atomic_write

    atomic_write(Path(path), lambda tmp: img.save(tmp, format="PNG"), sync=False)
