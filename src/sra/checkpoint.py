"""Checkpoints: atomic writes, safe loading (also of the authors' released files), finding the latest one. Below both
models/ (which loads them for sampling) and train/ (which writes and resumes them).

Our checkpoints bundle everything the next step needs: model, ema, opt, scaler, step, config. The released SiT/DiT+SRA
files are dicts with 'model', 'ema', 'opt', 'args' (an argparse.Namespace); we load them with weights_only=True and
only argparse.Namespace allowed in addition, so nothing else is unpickled.
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path

import torch

from .runfolder import atomic_write


class CheckpointError(ValueError):
    """A missing, truncated or mismatched checkpoint; the CLI prints it as one line."""


def save_checkpoint(obj: dict, path: str | os.PathLike) -> None:
    """Write to a temporary file in the same folder, then rename: a crash never leaves a half-written checkpoint, and
    a failed write (a full disk) leaves the previous checkpoints intact and no temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: torch.save(obj, tmp), point="checkpoint-write")


def unreadable_reason(e: Exception) -> str:
    """Why torch.load refused a file, in words that do not suggest unpickling it unsafely."""
    text = str(e)
    if "Weights only load failed" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f" ({found.group(1)})" if found else ""
        return (f"it holds Python objects other than tensors and plain containers{what}; they are not loaded, "
                "since unpickling them could run code")
    if isinstance(e, (KeyError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError)) or "zip archive" in text:
        return "not a PyTorch checkpoint, or a truncated one"
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return first


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's pickle-protocol notes about foreign files
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated zip, foreign pickle, ...
        raise CheckpointError(f"cannot read checkpoint {path}: {unreadable_reason(e)}") from None
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


def state_mismatch(own: dict, state: dict) -> str | None:
    """What keeps `state` from loading strictly into a module whose state dict is `own`: the first mismatching tensor
    with both shapes, missing and unexpected keys; None when it fits."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(getattr(state[k], "shape", ()))]
    parts = []
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} shape mismatches (first: {k} is {tuple(state[k].shape)} in the checkpoint, "
                     f"{tuple(own[k].shape)} in the model)")
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    return "; ".join(parts) or None


def load_weights(model: torch.nn.Module, state: dict, source: str = "checkpoint") -> None:
    """Strict load with a one-line explanation of what does not match."""
    problem = state_mismatch(model.state_dict(), state)
    if problem:
        raise CheckpointError(f"{source} does not fit this model: {problem}")
    model.load_state_dict(state, strict=True)


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"{step:07d}.pt"


def checkpoint_files(run_dir: str | os.PathLike) -> list[Path]:
    """RUN/checkpoints/NNNNNNN.pt, oldest first."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.pt") if re.fullmatch(r"\d+\.pt", p.name))


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    found = checkpoint_files(run_dir)
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
