"""Named training recipes (`sra train --preset NAME`): the paper's experiments as partial configs, in the nested
format of config.json. Flags and `--config` files override them; `sra train --list-presets` prints them."""
from __future__ import annotations

from dataclasses import dataclass

from .. import options

# ImageNet 256x256 through the SD-VAE: 32x32x4 latents, 1000 classes; paper's optimisation (Sec. 4.1): global batch
# 256, AdamW 1e-4 constant, fp16; the paper's alignment: smooth-L1 with lambda 0.2, t_max 0.2.
_IN256 = {"input_size": 32, "in_channels": 4, "num_classes": 1000, "batch_size": 256, "lr": 1e-4,
          "lr_warmup_steps": 0, "mixed_precision": "fp16", "ema_decay": 0.9999, "ema_warmup": False,
          "log_every": 100, "sample_every": 10_000, "checkpoint_every": 50_000, "num_workers": 8}
_PAPER_ALIGN = {"distance": "sml1", "weight": 0.2, "t_max": 0.2}
# ImageNet-1k train has 1,281,167 images: 5,004 steps per epoch at batch 256, so 800 epochs ~ 4.0M steps.
_EPOCH_STEPS = 1_281_167 // 256


@dataclass(frozen=True)
class Recipe:
    summary: str                          # one line: what is trained on what
    source: str                           # where the recipe comes from (paper table, code)
    config: dict                          # partial TrainConfig dict
    data: str | None = None               # the data it expects; --data-dir must be given when set


RECIPES = {
    "demo": Recipe(
        "tiny SiT-T/4 + SRA (blocks 2 -> 4, cosine, lambda 0.5) on Fashion-MNIST, ~10 min on a CPU",
        "this project's CPU demo (docs/RESULTS.md); the same as `sra train` with no flags", {}),
    "sit-b2-sra-in256": Recipe(
        "SiT-B/2 + SRA on ImageNet 256 latents, 400K steps (~80 epochs)",
        "arXiv 2505.02831 Table 1: SiT-B/2 + SRA at 400K iterations, FID 29.10 without guidance (plain SiT-B/2: 33.02)",
        {"model": "SiT-B/2", **_IN256, "max_train_steps": 400_000,
         "align": {**_PAPER_ALIGN, "block_out_s": 3, "block_out_t": 8}},
        data="latent store of ImageNet at 256 px (`sra prepare IMAGENET/train DIR --resolution 256`)"),
    "sit-xl2-sra-in256": Recipe(
        "SiT-XL/2 + SRA on ImageNet 256 latents, 800 epochs (~4.0M steps)",
        "arXiv 2505.02831 system-level comparison: SiT-XL/2 + SRA at 800 epochs, FID 1.58 with CFG 1.8 and guidance "
        "interval (SDE, 250 steps); authors' SiT-SRA README command (blocks 8 -> 20, t_max 0.2)",
        {"model": "SiT-XL/2", **_IN256, "max_train_steps": 800 * _EPOCH_STEPS,
         "align": {**_PAPER_ALIGN, "block_out_s": 8, "block_out_t": 20, "legacy_epoch_decay": True}},
        data="latent store of ImageNet at 256 px (`sra prepare IMAGENET/train DIR --resolution 256`)"),
    "dit-xl2-sra-in256": Recipe(
        "DiT-XL/2 + SRA (DDPM, learned sigma) on ImageNet 256 latents, 800 epochs (~4.0M steps)",
        "arXiv 2505.02831 DiT-XL/2 + SRA (layers 8 -> 16); authors' DiT-SRA train.py defaults (fp16, smooth-L1, "
        "~800 epochs)",
        {"model": "DiT-XL/2", **_IN256, "max_train_steps": 800 * _EPOCH_STEPS,
         "align": {**_PAPER_ALIGN, "weight": 0.04, "legacy_epoch_decay": True, "block_out_s": 8,
                   "block_out_t": 16}},  # DiT-SRA's factor 0.4 x 0.1, not SiT's 2 x 0.1
        data="latent store of ImageNet at 256 px (`sra prepare IMAGENET/train DIR --resolution 256`)"),
}


def recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown preset {name!r}; choices: {', '.join(RECIPES)} (`sra train --list-presets`)")
    return RECIPES[name]


def as_flags(config: dict, cls) -> str:
    """A partial config as the equivalent `sra train` flags (for --list-presets)."""
    fields = options.option_names(cls)
    parts = []
    for key, value in _flatten(config).items():
        flag = options.flag_name(fields[key])
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        else:
            parts.append(f"{flag} {' '.join(map(str, value)) if isinstance(value, tuple) else value}")
    return " ".join(parts)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def list_recipes(cls) -> str:
    lines = []
    for name, r in RECIPES.items():
        lines += [f"{name}: {r.summary}", f"  source: {r.source}"]
        if r.data:
            lines.append(f"  data:   --data-dir DIR, a {r.data}")
        lines.append(f"  flags:  {as_flags(r.config, cls) or '(the defaults)'}")
    return "\n".join(lines)
