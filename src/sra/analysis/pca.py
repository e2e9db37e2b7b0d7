"""PCA maps of a diffusion transformer's tokens for one image, per block and per noise level (SRA paper, Fig. 2).

Each cell (time t, block d) fits its own PCA to the T tokens of that image at that depth and time, projects them on
the first three principal components and min-max scales each component to [0, 1] as R, G, B. A PCA per cell (not
one joint basis) is what the paper's figure shows: it asks "is there spatial structure here?", not "are the features
the same across blocks?"; colours are therefore not comparable between cells.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..data.grid import to_uint8
from ..runfolder import atomic_write
from .probe import block_tokens, null_labels, per_image_noise

PCA_SEED_INDEX = 0  # the image's index for per_image_noise: the noise is fixed by --seed alone


def principal_components(tokens: torch.Tensor, k: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k principal directions (k, D) of tokens (T, D) and the centred projections (T, k), in float64.

    Signs are fixed so that each direction's largest-magnitude coefficient is positive (deterministic colours)."""
    x = tokens.double()
    x = x - x.mean(dim=0, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)  # rows of vh: directions by decreasing variance
    v = vh[:k]
    idx = v.abs().argmax(dim=1)
    v = v * torch.sign(v[torch.arange(len(v)), idx])[:, None]
    if len(v) < k:  # fewer tokens or dimensions than k: pad with zero components
        v = torch.cat([v, v.new_zeros(k - len(v), v.shape[1])])
    return v, x @ v.T


def to_rgb(proj: torch.Tensor) -> torch.Tensor:
    """(T, 3) projections -> colours in [0, 1], each component min-max scaled on its own."""
    lo, hi = proj.min(dim=0).values, proj.max(dim=0).values
    return ((proj - lo) / (hi - lo).clamp_min(1e-12)).float()


@torch.no_grad()
def pca_maps(model, process, x0: torch.Tensor, *, times, blocks, label: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """RGB maps (len(times), len(blocks), g, g, 3) in [0, 1] for one clean input x0 (1, C, H, W), g = H / patch,
    and the noisy inputs (len(times), 1, C, H, W) the model saw. `label` None: the null label."""
    device = next(model.parameters()).device
    blocks = list(blocks)
    grid = model.input_size // model.patch_size
    x0 = x0.to(device).float()
    noise = per_image_noise([PCA_SEED_INDEX], tuple(x0.shape[1:]), seed).to(device)
    y = null_labels(model, 1, device) if label is None else torch.tensor([label], device=device)
    if label is not None and not 0 <= label < model.num_classes:
        raise ValueError(f"label {label} outside 0..{model.num_classes - 1}")
    maps = np.zeros((len(times), len(blocks), grid, grid, 3), dtype=np.float32)
    inputs = []
    for i, t in enumerate(times):
        xt = process.noisy(x0, noise, t)
        inputs.append(xt.cpu())
        tokens = block_tokens(model, xt, process.model_time(t), y, blocks)
        for j, d in enumerate(blocks):
            _, proj = principal_components(tokens[d][0])
            maps[i, j] = to_rgb(proj).reshape(grid, grid, 3).cpu().numpy()
    return maps, torch.stack(inputs).numpy()


# ----------------------------------------------------------------------------------------------------------------
# Inputs: an image file to the model's input space
# ----------------------------------------------------------------------------------------------------------------

def load_image(file: str | os.PathLike, size: int, channels: int) -> torch.Tensor:
    """An image file -> (1, C, size, size) in [-1, 1]: converted to grey or RGB, centre-cropped square, resized."""
    from PIL import Image

    try:
        with Image.open(file) as im:
            im = im.convert("L" if channels == 1 else "RGB")
    except OSError as e:
        raise ValueError(f"cannot read image {file}: {e}") from None
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    im = im.resize((size, size), Image.BICUBIC)
    a = torch.from_numpy(np.asarray(im, dtype=np.float32).copy()) / 127.5 - 1.0
    return (a[None, None] if a.ndim == 2 else a.permute(2, 0, 1)[None]).clamp(-1, 1)


def model_input(model, file: str | os.PathLike, vae: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(model input (1, C, H, W), picture the model saw or None) for an image or latent file.

    Pixel models (1 or 3 channels) take the image itself. Latent models take a saved latent (.pt / .npy, (C, H, W),
    already scaled) or an image encoded with the VAE `vae` (default $SRA_VAE): the posterior mean times the VAE's
    scaling factor (0.18215 for the SD-VAE), as latent stores with normalize="scale" feed training."""
    from ..data.vae import encode_moments, env_vae, load_vae, vae_info

    c, size = model.in_channels, model.input_size
    suffix = Path(file).suffix.lower()
    if suffix in (".pt", ".pth", ".npy"):
        z = torch.load(file, weights_only=True) if suffix != ".npy" else torch.from_numpy(np.load(file))
        z = torch.as_tensor(z).float()
        z = z[None] if z.ndim == 3 else z
        if tuple(z.shape[1:]) != (c, size, size):
            raise ValueError(f"{file} holds a {tuple(z.shape[1:])} tensor but the model takes {(c, size, size)}")
        return z[:1], None
    if c in (1, 3):
        x = load_image(file, size, c)
        return x, x
    vae = vae or env_vae()
    if vae is None:
        raise ValueError(f"this model works on {c}-channel latents: pass --vae FOLDER (a diffusers AutoencoderKL; or set "
                         "$SRA_VAE) to encode the image, or give a latent file (.pt/.npy) instead of an image")
    net = load_vae(vae)
    info = vae_info(net, vae)
    x = load_image(file, size * info["downsample"], 3)  # (1, 3, H, W) in [-1, 1]
    pixels = torch.from_numpy(to_uint8(x[:1], "nearest"))  # (1, H, W, 3)
    z = encode_moments(net, pixels)[:, :info["latent_channels"]] * info["scaling_factor"]  # posterior mean
    if z.shape[1] != c:
        raise ValueError(f"the VAE {vae} makes {z.shape[1]}-channel latents but the model takes {c}")
    return z, x


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------

LEFT, TOP, PAD = 64, 22, 4  # label margins and gap between cells, pixels


def grid_size(rows: int, cols: int, cell: int) -> tuple[int, int]:
    """(width, height) of `render_grid`'s PNG."""
    return LEFT + cols * (cell + PAD), TOP + rows * (cell + PAD)


def render_grid(maps: np.ndarray, path: str | os.PathLike, *, row_labels, col_labels, cell: int = 96,
                inputs: np.ndarray | None = None) -> tuple[int, int]:
    """Write maps (rows, cols, g, g, 3) in [0, 1] as a labelled PNG, each map upscaled (nearest) to cell x cell.

    `inputs` (rows, 1, C, H, W) in model range, if given, become an extra first column headed "x_t"."""
    from PIL import Image, ImageDraw

    rows, cols = maps.shape[:2]
    cells = [[Image.fromarray((maps[i, j] * 255).round().astype(np.uint8)) for j in range(cols)] for i in range(rows)]
    if inputs is not None:
        col_labels = ["x_t", *col_labels]
        for i in range(rows):
            a = ((np.clip(inputs[i, 0], -1, 1) + 1) * 127.5).round().astype(np.uint8)  # (C, H, W)
            a = a[0] if a.shape[0] == 1 else a[:3].transpose(1, 2, 0)
            cells[i].insert(0, Image.fromarray(a).convert("RGB"))
    width, height = grid_size(rows, len(cells[0]), cell)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for j, text in enumerate(col_labels):
        draw.text((LEFT + j * (cell + PAD) + cell // 2, TOP // 2), str(text), fill="black", anchor="mm")
    for i, text in enumerate(row_labels):
        y = TOP + i * (cell + PAD)
        draw.text((LEFT // 2, y + cell // 2), str(text), fill="black", anchor="mm")
        for j, im in enumerate(cells[i]):
            canvas.paste(im.resize((cell, cell), Image.NEAREST), (LEFT + j * (cell + PAD), y))
    atomic_write(path, lambda tmp: canvas.save(tmp, format="PNG"))  # never through a planted link
    return width, height
