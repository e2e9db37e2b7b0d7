"""Model presets: "SiT-B/2", "DiT-XL/2", ... plus tiny CPU presets."""
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
FAMILIES = ("SiT", "DiT")
LEARNED_VARIANCE = {"SiT": False, "DiT": True}  # DiT predicts epsilon and the variance: 2 C output channels

MODEL_NAMES = [f"{fam}-{size}/{p}" for fam in FAMILIES for size in SIZES for p in PATCHES]
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
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choices: {', '.join(MODEL_NAMES)}")
    return family, size, patch


def build_model(name: str, **overrides) -> DiffusionTransformer:
    """Build a preset. DiT presets predict 2*C channels (learned sigma); SiT presets predict C (velocity)."""
    family, size, patch = parse_name(name)
    unknown = set(overrides) - set(OVERRIDES)
    if unknown:
        raise TypeError(f"build_model got unknown overrides {sorted(unknown)}; allowed: {', '.join(OVERRIDES)}")
    depth, hidden, heads = SIZES[size]
    kwargs = dict(depth=depth, hidden_size=hidden, num_heads=heads, patch_size=patch)
    kwargs.update(overrides)
    return DiffusionTransformer(learn_sigma=LEARNED_VARIANCE[family], **kwargs)
