"""Model presets: "SiT-B/2", "DiT-XL/2", ... plus tiny CPU presets, and the paper's SRA layer choices."""
from __future__ import annotations

from .dit import DiffusionTransformer

# name -> (depth, hidden size, heads); published sizes (DiT Table 1) and a tiny CPU size.
SIZES = {
    "T": (6, 128, 4),  # tiny: Fashion-MNIST on a laptop CPU in minutes
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}
PATCHES = (2, 4, 8)

# SRA paper: student block -> teacher block (1-indexed count of blocks run).
SRA_LAYERS = {
    ("SiT", "T"): (2, 4), ("SiT", "S"): (3, 8), ("SiT", "B"): (3, 8), ("SiT", "L"): (6, 16), ("SiT", "XL"): (8, 20),
    ("DiT", "T"): (2, 4), ("DiT", "S"): (3, 7), ("DiT", "B"): (3, 7), ("DiT", "L"): (6, 14), ("DiT", "XL"): (8, 16),
}

MODEL_NAMES = [f"{fam}-{size}/{p}" for fam in ("SiT", "DiT") for size in SIZES for p in PATCHES]
OVERRIDES = ("input_size", "in_channels", "num_classes", "class_dropout_prob",
             "depth", "hidden_size", "num_heads", "patch_size", "mlp_ratio", "z_dims", "projector_dim")


def parse_name(name: str) -> tuple[str, str, int]:
    """'SiT-XL/2' -> ('SiT', 'XL', 2); a clear ValueError for anything else."""
    try:
        family, rest = name.split("-", 1)
        size, patch = rest.split("/")
        patch = int(patch)
    except ValueError:
        raise ValueError(f"unknown model {name!r}; expected e.g. SiT-B/2 (choices: {', '.join(MODEL_NAMES)})") from None
    if family not in ("SiT", "DiT") or size not in SIZES or patch not in PATCHES:
        raise ValueError(f"unknown model {name!r}; choices: {', '.join(MODEL_NAMES)}")
    return family, size, patch


def default_sra_layers(name: str) -> tuple[int, int]:
    family, size, _ = parse_name(name)
    return SRA_LAYERS[(family, size)]


def build_model(name: str, **overrides) -> DiffusionTransformer:
    """Build a preset. DiT presets predict 2*C channels (learned sigma); SiT presets predict C (velocity)."""
    family, size, patch = parse_name(name)
    unknown = set(overrides) - set(OVERRIDES)
    if unknown:
        raise TypeError(f"build_model got unknown overrides {sorted(unknown)}; allowed: {', '.join(OVERRIDES)}")
    depth, hidden, heads = SIZES[size]
    kwargs = dict(depth=depth, hidden_size=hidden, num_heads=heads, patch_size=patch)
    kwargs.update(overrides)
    return DiffusionTransformer(learn_sigma=(family == "DiT"), **kwargs)
