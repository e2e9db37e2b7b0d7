"""The Stable Diffusion VAE (diffusers' `AutoencoderKL`): loading without network access, encoding images to posterior
moments, decoding latents to images.

The VAE runs once, offline (`sra prepare`); the store keeps its posterior mean and std and training samples the
posterior per batch (edm2 `training/encoders.py`). Images go in as uint8 and come out in [-1, 1]; the VAE sees [-1, 1]
as in DiT/SiT/REPA (edm2 feeds [0, 1]).
"""
from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import torch

from .base import DataError

DEFAULT_VAE = "stabilityai/sd-vae-ft-ema"  # the authors' default decoder (their generate.py: --vae ema)
HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")  # owner/name on the Hugging Face hub


def resolve_vae(name_or_path: str) -> tuple[str, str | None]:
    """(what from_pretrained gets, subfolder) for a local folder, a pipeline folder with `vae/`, or a hub name.

    Local folders are checked here so that a wrong path or another architecture fails with one clear line."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        folder, sub = (p, None) if (p / "config.json").exists() else (p / "vae", "vae")
        cfg = folder / "config.json"
        if not cfg.exists():
            raise DataError(f"VAE folder {p} has no config.json (expected a diffusers AutoencoderKL folder)")
        try:
            cls = json.loads(cfg.read_text()).get("_class_name")
        except (json.JSONDecodeError, OSError) as e:
            raise DataError(f"cannot read {cfg}: {e}") from None
        if cls != "AutoencoderKL":
            raise DataError(f"VAE folder {p} holds a {cls or 'model of unknown class'}, not an AutoencoderKL")
        return str(p.resolve()), sub
    if HUB_NAME.match(name_or_path) and not name_or_path.startswith((".", "~")):
        return name_or_path, None
    raise DataError(f"VAE folder {name_or_path} does not exist")


def load_vae(name_or_path: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
    """An eval-mode, frozen AutoencoderKL from a local folder or the Hugging Face cache; nothing is downloaded."""
    try:
        from diffusers import AutoencoderKL
    except ImportError:
        raise DataError("the VAE needs diffusers: pip install 'sra-diffusion[vae]'") from None
    source, sub = resolve_vae(name_or_path)
    kwargs = {"subfolder": sub} if sub else {}
    try:
        with warnings.catch_warnings():  # huggingface_hub's deprecation noise on a cache miss
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
            vae = AutoencoderKL.from_pretrained(source, local_files_only=True, torch_dtype=dtype,
                                                low_cpu_mem_usage=False, **kwargs)
    except (OSError, ValueError, RuntimeError) as e:
        if Path(source).exists():
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DataError(f"cannot load the AutoencoderKL in {source}: {first}") from None
        raise DataError(f"VAE {source} is not in the Hugging Face cache and nothing is downloaded here; fetch it "
                        f"once (`huggingface-cli download {source}`) or pass a local folder") from None
    if not hasattr(vae, "encode") or not hasattr(vae, "decode"):
        raise DataError(f"{source} did not load as an AutoencoderKL")
    return vae.eval().requires_grad_(False).to(device)


def vae_info(vae, name_or_path: str) -> dict:
    """What a store records about its VAE: enough to check a resume and to decode previews later."""
    cfg = vae.config
    source, _ = resolve_vae(name_or_path)
    return {"name_or_path": source, "class": type(vae).__name__, "latent_channels": int(cfg.latent_channels),
            "downsample": 2 ** (len(cfg.block_out_channels) - 1),
            "scaling_factor": float(getattr(cfg, "scaling_factor", None) or 0.18215)}


@torch.no_grad()
def encode_moments(vae, images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, H, W, 3) -> posterior moments (N, 2C, H/f, W/f): mean then std, float32."""
    param = next(vae.parameters())
    x = images.to(param.device, non_blocking=True).permute(0, 3, 1, 2).to(param.dtype) / 127.5 - 1.0
    dist = vae.encode(x).latent_dist
    return torch.cat([dist.mean, dist.std], dim=1).float()


@torch.no_grad()
def decode_latents(vae, z: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Unscaled latents (N, C, h, w) -> images (N, 3, H, W) in [-1, 1], float32 on z's device."""
    param = next(vae.parameters())
    out = [vae.decode(part.to(param.device, param.dtype)).sample.float().clamp(-1, 1)
           for part in z.split(batch_size)]
    return torch.cat(out).to(z.device)


def env_vae() -> str | None:
    """$SRA_VAE overrides the VAE used for decoding (a moved folder, or reference-layout data without a header)."""
    return os.environ.get("SRA_VAE") or None
