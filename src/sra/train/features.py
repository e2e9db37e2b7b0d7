"""Where REPA's encoder features come from during training: stored with the data, or an encoder run on each batch."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

from ..evaluation.fmnist import fmnist_scorer
from ..encoders import encode, load_encoder
from ..objectives import RepaConfig


def feature_source(cfg: RepaConfig, dataset, grid: int, device) -> tuple[int, Callable | None]:
    """(feature size D_e, encoder to run on each batch (clean inputs -> features on the grid) or None). A latent store with stored features hands them over
    with every batch (training runs no encoder); pixel data runs the encoder on the clean images; latents without
    stored features cannot be encoded at train time (no images), which is one clear error."""
    info = getattr(dataset, "feature_info", None)
    if info:
        same = info["encoder"] == cfg.encoder or (Path(cfg.encoder).is_dir() and
                                                  info["encoder"] == f"dinov2:{Path(cfg.encoder).resolve()}")
        if not same:
            raise ValueError(f"the data's stored features come from {info['encoder']}, not {cfg.encoder}")
        if info["grid"] != grid:
            raise ValueError(f"the data's stored features are on a {info['grid']}x{info['grid']} grid but the model has "
                             f"{grid}x{grid} tokens (sra prepare --encoder-grid {grid})")
        dataset.with_features = True
        return int(info["dim"]), None
    if hasattr(dataset, "unnormalize"):  # a latent dataset: the images are not at hand during training
        raise ValueError(f"REPA on latents needs the encoder's features in the store: `sra prepare ... --encoder "
                         f"{cfg.encoder}` (then train on that store)")
    classifier = fmnist_scorer(device).model.body if cfg.encoder == "fmnist" else None  # trained once, then cached
    encoder = load_encoder(cfg.encoder, device, classifier)
    return int(encoder.dim), partial(encode, encoder, grid=grid)
