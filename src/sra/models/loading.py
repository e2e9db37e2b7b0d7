"""Build a model for sampling/analysis from a run folder, one of our checkpoints, an authors' released checkpoint, or
a plain state dict: the architecture is read off the weights' shapes, so no flags are needed."""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, load_weights, model_state
from .dit import DiffusionTransformer
from .presets import LEARNED_VARIANCE, SIZES

FAMILY_OF_OUTPUT = {learned: family for family, learned in LEARNED_VARIANCE.items()}  # learned sigma -> family


@dataclass
class LoadedModel:
    model: DiffusionTransformer           # in eval mode, EMA weights unless asked otherwise
    family: str                           # "SiT" (velocity, t in [0, 1]) or "DiT" (DDPM, learned sigma)
    config: dict | None                   # our resolved TrainConfig as a dict, when the checkpoint has one
    source: Path                          # the checkpoint file read
    step: int | None                      # training step of our checkpoints
    released_args: dict | None = None     # vars() of the argparse.Namespace under 'args' in the authors' files


def architecture_from_state(state: dict) -> dict:
    """Constructor arguments of DiffusionTransformer that reproduce a state dict's shapes."""
    try:
        w = state["x_embedder.proj.weight"]  # (D, C, p, p)
        hidden, in_channels, patch = w.shape[0], w.shape[1], w.shape[2]
        tokens = state["pos_embed"].shape[1]
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        table = state["y_embedder.embedding_table.weight"].shape[0]
        out = state["final_layer.linear.weight"].shape[0] // (patch * patch)
        mlp_hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
    except (KeyError, ValueError, IndexError) as e:
        raise ValueError(f"state dict is not a SiT/DiT checkpoint (missing {e})") from None
    heads = next((h for d, w_, h in SIZES.values() if w_ == hidden), max(1, hidden // 64))
    projectors = sorted({int(k.split(".")[1]) for k in state if k.startswith("projectors.")})  # REPA-trained runs
    extra = dict(z_dims=tuple(state[f"projectors.{i}.4.weight"].shape[0] for i in projectors),
                 projector_dim=state["projectors.0.0.weight"].shape[0]) if projectors else {}
    return dict(input_size=int(round(tokens ** 0.5)) * patch, patch_size=patch, in_channels=in_channels,
                hidden_size=hidden, depth=depth, num_heads=heads, mlp_ratio=mlp_hidden / hidden,
                num_classes=table - 1, class_dropout_prob=0.1, learn_sigma=out == 2 * in_channels, **extra)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A run folder -> its latest checkpoint; an `sra export` folder -> its model.safetensors; a file -> itself."""
    path = Path(path)
    if path.is_dir() and (path / "model.safetensors").is_file():
        return path / "model.safetensors"
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise CheckpointError(f"run folder {path} holds no checkpoint")
        return found
    if not path.exists():
        raise CheckpointError(f"{path} is neither a run folder nor a checkpoint file")
    return path


def load_model(path: str | os.PathLike, weights: str = "ema", num_heads: int | None = None,
               device: str | torch.device = "cpu") -> LoadedModel:
    """Load for inference. `weights`: 'ema' (default) or 'model'. `num_heads` overrides the guess from the width.
    Also reads `sra export --format safetensors` output (its weights are the EMA ones)."""
    file = resolve_checkpoint(path)
    if file.suffix == ".safetensors":
        state, arch, config, step = read_safetensors(file)
        args = None
    else:
        ckpt = load_checkpoint(file)
        state = model_state(ckpt, prefer=weights)
        arch = architecture_from_state(state)
        config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else None
        if config is None and (file.parent.parent / "config.json").exists():
            config = json.loads((file.parent.parent / "config.json").read_text())
        step = ckpt.get("step", ckpt.get("steps"))
        args = ckpt.get("args")
    if num_heads:
        arch["num_heads"] = num_heads
    model = DiffusionTransformer(**arch)
    load_weights(model, state, source=str(file))
    return LoadedModel(model.to(device).eval(), FAMILY_OF_OUTPUT[arch["learn_sigma"]], config, file,
                       int(step) if step is not None else None,
                       vars(args) if isinstance(args, argparse.Namespace) else None)


def read_safetensors(file: Path) -> tuple[dict, dict, dict | None, int | None]:
    """(state, architecture, train config, step) of an `sra export --format safetensors` file: the architecture comes
    from the JSON config in the file's metadata (or beside it), else from the shapes."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        state = load_file(str(file))
        with safe_open(str(file), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read {file}: {str(e).splitlines()[0]}") from None
    config = json.loads(meta["sra_config"]) if "sra_config" in meta else None
    if config is None and (file.parent / "config.json").is_file():
        config = json.loads((file.parent / "config.json").read_text())
    if not (isinstance(config, dict) and config.get("format") == "sra"):
        return state, architecture_from_state(state), None, None
    return state, dict(config["architecture"]), config.get("train_config"), config.get("step")
