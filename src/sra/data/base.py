"""What every module of sra.data shares: the one error type, the image extensions read, and the latent store's layout
and detection (the store's files are written by prepare.py and read by latents.py; sources.py tells stores apart from
image folders). Imports nothing else of sra, so pixels, latents, vae and prepare all build on it without a cycle.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")


class DataError(ValueError):
    """Bad or missing data; the CLI prints the message as one line and exits non-zero."""


# The latent store (layout in latents.py's docstring)
FORMAT = "sra-latents"
VERSION = 1
HEADER, MOMENTS, LABELS, STATUS, FILES, SKIPPED = ("latents.json", "moments.npy", "labels.npy", "status.npy",
                                                   "files.txt", "skipped.txt")
FEATURES = "features.npy"
PENDING, DONE, SKIP = 0, 1, 2
REFERENCE_DIR, REFERENCE_JSON = "vae-sd", "dataset.json"
NORMALIZATIONS = ("scale", "channel")


def read_header(root: str | os.PathLike) -> dict | None:
    """The store header, or None when `root` is not an sra store."""
    f = Path(root) / HEADER
    try:
        h = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return h if isinstance(h, dict) and h.get("format") == FORMAT else None


def reference_dir(root: str | os.PathLike) -> Path | None:
    """The folder holding the reference layout's dataset.json and .npy files: ROOT/vae-sd or ROOT itself."""
    root = Path(root)
    for d in (root / REFERENCE_DIR, root):
        if (d / REFERENCE_JSON).is_file() and any(p.suffix == ".npy" for p in d.rglob("*.npy")):
            return d
    return None


def is_latent_store(path: str | os.PathLike) -> bool:
    return read_header(path) is not None or reference_dir(path) is not None
