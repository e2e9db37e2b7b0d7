"""Model presets: "SiT-B/2", "DiT-XL/2", ... plus tiny CPU presets. A preset's family names the process it trains
with by default (a name in sra.process.PROCESSES) and its output layout."""
from __future__ import annotations

from typing import NamedTuple

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


class Family(NamedTuple):
    process: str        # the process its presets train with (sra.process.PROCESSES)
    learn_sigma: bool   # output layout: 2 C channels (epsilon and the variance) instead of C


FAMILIES = {"SiT": Family(process="flow", learn_sigma=False), "DiT": Family(process="ddpm", learn_sigma=True)}

MODEL_NAMES = [f"{fam}-{size}/{p}" for fam in FAMILIES for size in SIZES for p in PATCHES]
OVERRIDES = ("input_size", "in_channels", "num_classes", "class_dropout_prob",
             "depth", "hidden_size", "num_heads", "patch_size", "mlp_ratio")


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


def family(name: str) -> Family:
    """The family of a preset name: its default process and output layout."""
    return FAMILIES[parse_name(name)[0]]


def default_process(name: str) -> str:
    """The process a preset trains with unless its spec names another."""
    return family(name).process


def check_process(name: str, process) -> None:
    """A process class fits a preset when its outputs are the preset's layout (DDPM's learned variance: 2 C)."""
    if process.learn_sigma != family(name).learn_sigma:
        raise ValueError(f"the {process.name} process does not fit {name}'s outputs; it trains with the "
                         f"{default_process(name)} process")


def architecture(name: str) -> dict:
    """The model attributes a preset fixes (those a checkpoint's shapes tell): depth, width, patch, output layout."""
    _, size, patch = parse_name(name)
    depth, hidden, _ = SIZES[size]
    return dict(depth=depth, hidden_size=hidden, patch_size=patch, learn_sigma=family(name).learn_sigma)


def build_model(name: str, **overrides) -> DiffusionTransformer:
    """Build a preset. DiT presets predict 2*C channels (learned sigma); SiT presets predict C (velocity)."""
    _, size, patch = parse_name(name)
    unknown = set(overrides) - set(OVERRIDES)
    if unknown:
        raise TypeError(f"build_model got unknown overrides {sorted(unknown)}; allowed: {', '.join(OVERRIDES)}")
    depth, hidden, heads = SIZES[size]
    kwargs = dict(depth=depth, hidden_size=hidden, num_heads=heads, patch_size=patch)
    kwargs.update(overrides)
    return DiffusionTransformer(learn_sigma=family(name).learn_sigma, **kwargs)
