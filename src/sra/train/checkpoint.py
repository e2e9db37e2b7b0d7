"""Checkpoints: atomic writes, safe loading (also of the authors' released files), finding the latest one.

Our checkpoints bundle everything the next step needs: model, ema, opt, scaler, step, config. The released SiT/DiT+SRA
files are dicts with 'model', 'ema', 'opt', 'args' (an argparse.Namespace); we load them with weights_only=True and
only argparse.Namespace allowed in addition, so nothing else is unpickled.
"""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import torch


class CheckpointError(ValueError):
    """A missing, truncated or mismatched checkpoint; the CLI prints it as one line."""


def save_checkpoint(obj: dict, path: str | os.PathLike) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle, ...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {msg}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict")
    return obj


def model_state(ckpt: dict, prefer: str = "ema") -> dict:
    """The weights to sample with: 'ema' (default) or 'model' of a training checkpoint, or a plain state dict."""
    for key in (prefer, "ema", "model"):
        if key in ckpt and isinstance(ckpt[key], dict):
            state = ckpt[key]
            break
    else:
        state = ckpt
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError("checkpoint holds no state dict under 'ema' or 'model'")
    # DDP / torch.compile prefixes from other training code.
    return {re.sub(r"^(module\.|_orig_mod\.)+", "", k): v for k, v in state.items()}


def load_weights(model: torch.nn.Module, state: dict, source: str = "checkpoint") -> None:
    """Strict load with a one-line explanation of what does not match."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} shape mismatches (e.g. {k}: {tuple(state[k].shape)} vs model {tuple(own[k].shape)})")
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        raise CheckpointError(f"{source} does not fit this model: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"{step:07d}.pt"


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return None
    found = sorted(p for p in folder.glob("*.pt") if re.fullmatch(r"\d+\.pt", p.name))
    return found[-1] if found else None


def prune_checkpoints(run_dir: str | os.PathLike, keep_last: int, keep_every: int = 0,
                      protect: tuple[Path | None, ...] = ()) -> list[Path]:
    """Delete step checkpoints beyond the newest `keep_last` (0: keep all), except milestones (steps that are multiples
    of `keep_every`) and the `protect`ed files (the one being written, the one this session resumed from). Returns the
    deleted paths. Only finished `NNNNNNN.pt` files are considered; a checkpoint is written (atomically) before any
    older one is deleted."""
    if keep_last <= 0:
        return []
    found = sorted(p for p in (Path(run_dir) / "checkpoints").glob("*.pt") if re.fullmatch(r"\d+\.pt", p.name))
    keep = set(found[-keep_last:]) | {Path(p) for p in protect if p is not None}
    if keep_every > 0:
        keep |= {p for p in found if int(p.stem) % keep_every == 0}
    deleted = [p for p in found if p not in keep]
    for p in deleted:
        p.unlink(missing_ok=True)
    return deleted
