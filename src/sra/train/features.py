"""Where an external encoder's features come from during training (REPA's targets): stored with the data, or an
encoder run on each batch. A term asks for one through its class's `encoder_of(config)` (the encoder it names)."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

from ..evaluation.fmnist import fmnist_scorer
from ..encoders import encode, load_encoder
from ..objectives import TERMS


def term_resources(spec, dataset, device) -> dict:
    """What the spec's active terms build themselves from: `encoder` (run on each batch, or None when the data
    stores the features) and its feature size `z_dim`, for a term that names an encoder."""
    wanted = {TERMS[name].encoder_of(cfg) for name, cfg in spec.terms.items()
              if cfg.active and hasattr(TERMS[name], "encoder_of")}
    if not wanted:
        return {}
    if len(wanted) > 1:
        raise ValueError(f"terms name different encoders ({', '.join(sorted(wanted))}); one run feeds one")
    z_dim, encoder = feature_source(wanted.pop(), dataset, spec.input_size // spec.patch_size, device)
    return {"encoder": encoder, "z_dim": z_dim}


def feature_source(name: str, dataset, grid: int, device) -> tuple[int, Callable | None]:
    """(feature size D_e, encoder to run on each batch (clean inputs -> features on the grid) or None). A latent store with stored features hands them over
    with every batch (training runs no encoder); pixel data runs the encoder on the clean images; latents without
    stored features cannot be encoded at train time (no images), which is one clear error."""
    info = getattr(dataset, "feature_info", None)
    if info:
        same = info["encoder"] == name or (Path(name).is_dir() and
                                                  info["encoder"] == f"dinov2:{Path(name).resolve()}")
        if not same:
            raise ValueError(f"the data's stored features come from {info['encoder']}, not {name}")
        if info["grid"] != grid:
            raise ValueError(f"the data's stored features are on a {info['grid']}x{info['grid']} grid but the model has "
                             f"{grid}x{grid} tokens (sra prepare --encoder-grid {grid})")
        dataset.with_features = True
        return int(info["dim"]), None
    if hasattr(dataset, "unnormalize"):  # a latent dataset: the images are not at hand during training
        raise ValueError(f"REPA on latents needs the encoder's features in the store: `sra prepare ... --encoder "
                         f"{name}` (then train on that store)")
    classifier = fmnist_scorer(device).model.body if name == "fmnist" else None  # trained once, then cached
    encoder = load_encoder(name, device, classifier)
    return int(encoder.dim), partial(encode, encoder, grid=grid)
