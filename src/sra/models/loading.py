"""Build a model for sampling/analysis from a run folder, one of our checkpoints or exports, an authors' released
checkpoint, or a plain state dict: the architecture is read off the weights' shapes, so no flags are needed. The
process comes from the run's spec (its `process` section); only files that carry no spec (the authors' released
checkpoints, plain state dicts) have it decided from their weights and saved arguments, in `process_of_weights`."""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, load_weights, model_state
from .dit import DiffusionTransformer
from .presets import FAMILIES, SIZES

TRAINING_ONLY = ("projectors.",)
# The authors' released files are SiT-SRA's (velocity) or DiT-SRA's (epsilon and learned variance): which one a file
# is, its output layout tells (a fixed map of the released formats, not an inverse of the family table).
RELEASED_FAMILY = {False: "SiT", True: "DiT"}  # REPA's projectors in REPA-trained released files: not part of the backbone


@dataclass
class LoadedModel:
    model: DiffusionTransformer           # in eval mode, EMA weights unless asked otherwise
    process: dict                         # the spec's process section, e.g. {"name": "flow", "path": "linear", ...}
    config: dict | None                   # our resolved run spec as a dict, when the checkpoint has one
    source: Path                          # the checkpoint file read
    step: int | None                      # training step of our checkpoints
    released_args: dict | None = None     # vars() of the argparse.Namespace under 'args' in the authors' files


def process_of_weights(learn_sigma: bool, released_args: dict | None) -> dict:
    """The process section of a file that carries no spec: DDPM for learned-variance outputs (DiT), else flow
    matching with the released args' --path-type (SiT's train.py spells the cosine path "cos") and velocity
    prediction. The one place weight shapes decide the process."""
    section = {"name": FAMILIES[RELEASED_FAMILY[learn_sigma]].process}
    if not learn_sigma:
        path = (released_args or {}).get("path_type") or "linear"
        section["path"] = {"cos": "cosine"}.get(path, path)
    return section


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
    return dict(input_size=int(round(tokens ** 0.5)) * patch, patch_size=patch, in_channels=in_channels,
                hidden_size=hidden, depth=depth, num_heads=heads, mlp_ratio=mlp_hidden / hidden,
                num_classes=table - 1, class_dropout_prob=0.1, learn_sigma=out == 2 * in_channels)


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
    args = None
    if file.suffix == ".safetensors":
        state, arch, config, step, process = read_safetensors(file)
    else:
        ckpt = load_checkpoint(file)
        state = model_state(ckpt, prefer=weights)
        config = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else None
        if config is None and (file.parent.parent / "config.json").exists():
            config = json.loads((file.parent.parent / "config.json").read_text())
        step = ckpt.get("step", ckpt.get("steps"))
        args = vars(ckpt["args"]) if isinstance(ckpt.get("args"), argparse.Namespace) else None
        if config is None:  # released files (REPA-trained ones hold REPA's projectors beside the backbone)
            state = {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY)}
        arch = architecture_from_state(state)
        process = None
    if num_heads:
        arch["num_heads"] = num_heads
    if process is None:
        process = spec_process(config) or process_of_weights(arch["learn_sigma"], args)
    model = DiffusionTransformer(**arch)
    load_weights(model, state, source=str(file))
    return LoadedModel(model.to(device).eval(), process, config, file, int(step) if step is not None else None, args)


LEGACY_SECTION = "flow"  # where specs written before the `process` section kept SiT's path and training times


def spec_process(config: dict | None, model: str | None = None) -> dict | None:
    """The process section of a run spec (a copy; it may lack a name, which is then the preset's default). A spec
    written before the section existed has a `flow` section instead, read as the model family's process with those
    settings (`model`: the preset, when the spec does not name it)."""
    if not isinstance(config, dict):
        return None
    if "process" in config:
        return dict(config["process"]) if isinstance(config["process"], dict) else config["process"]
    model = config.get("model", model)
    if LEGACY_SECTION not in config or not isinstance(model, str) or model.split("-")[0] not in FAMILIES:
        return None
    family = FAMILIES[model.split("-")[0]]
    return {"name": family.process, **({} if family.learn_sigma else dict(config.get(LEGACY_SECTION) or {}))}


def read_safetensors(file: Path) -> tuple[dict, dict, dict | None, int | None, dict | None]:
    """(state, architecture, run spec, step, process section) of an `sra export --format safetensors` file: the
    architecture and process come from the JSON config in the file's metadata (or beside it), else from the shapes."""
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
        return state, architecture_from_state(state), None, None, None
    spec = config.get("train_config")
    process = config.get("process") if isinstance(config.get("process"), dict) else spec_process(spec)
    return state, dict(config["architecture"]), spec, config.get("step"), process
