"""Datasets of VAE latents: the store written by `sra prepare`, and the reference code's layout.

A store is one folder:
    latents.json   header: format, resolution, latent shape, VAE, class names, channel statistics, chunk size
    moments.npy    (N, 2C, h, w) float16, posterior mean then std per row; rows 2i, 2i+1 = image i and its mirror
                   when built with flips; memory-mapped
    labels.npy     (N,) int64
    status.npy     (N,) uint8: 0 not yet encoded, 1 done, 2 skipped (unreadable image); the commit mark of a chunk
    files.txt      the source images in row order; skipped.txt lists the unreadable ones with the reason
    features.npy   (N, T_e, D_e) float16, optional (`sra prepare --encoder`): a frozen encoder's patch features of each
                   row's image (REPA targets), so that training runs no encoder; memory-mapped
The reference layout (REPA/SRA `preprocessing/dataset_tools.py encode`) is a folder `vae-sd/` of one float32 .npy of
moments (2C, h, w) per image, `{00000..}/img-mean-std-{i:08d}.npy`, plus `vae-sd/dataset.json` {"labels": [[file, y]]}.

Items are (moments, label) with moments as stored (float16 or float32); `prepare_batch` samples the posterior on the
device, z = mean + std * eps, and scales it: z * 0.18215 (the SD-VAE scaling factor, as in DiT/SiT/REPA/SRA) or, with
normalize="channel", (z - mu_c) / sigma_c from the store's per-channel statistics. `decode` inverts that and runs the
VAE decoder for preview grids.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .base import (DONE, FEATURES, LABELS, MOMENTS, NORMALIZATIONS, PENDING, REFERENCE_JSON, STATUS, DataError,
                   read_header, reference_dir)
from .vae import DEFAULT_VAE

def open_latent_store(path: str | os.PathLike, normalize: str | None = None, vae: str | None = None):
    """A dataset over an sra store or a reference-layout folder. `normalize` ("scale" or "channel") defaults to the
    store's choice at preparation (reference data: "scale"); `vae` overrides the decoder ($SRA_VAE does too)."""
    if read_header(path) is not None:
        return LatentStore(path, normalize=normalize, vae=vae)
    if reference_dir(path) is not None:
        return ReferenceLatents(path, normalize=normalize, vae=vae)
    raise DataError(f"{path} is neither an `sra prepare` store nor a reference vae-sd/ folder")


# ----------------------------------------------------------------------------------------------------------------
# Posterior sampling, normalisation and decoding: shared by both layouts
# ----------------------------------------------------------------------------------------------------------------

class LatentDataset(Dataset):
    """Base: subclasses set moments shape, labels, class names, scale, optional channel statistics and VAE."""

    def _setup(self, moment_shape, labels: np.ndarray, class_names, scale: float, stats: dict | None,
               normalize: str | None, vae: str | None, name: str):
        if len(labels) == 0:
            raise DataError(f"latent store {name} holds no latents")
        c2, h, w = moment_shape
        self.shape = (c2 // 2, h, w)
        self.labels = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.scale, self.name = float(scale), name
        normalize = normalize or "scale"
        if normalize not in NORMALIZATIONS:
            raise DataError(f"unknown latent normalisation {normalize!r}; choices: {', '.join(NORMALIZATIONS)}")
        if normalize == "channel" and not stats:
            raise DataError(f"{name} has no per-channel statistics; use normalize='scale'")
        self.normalize = normalize
        self.channel_mean = torch.tensor(stats["mean"] if stats else [0.0] * self.shape[0]).view(1, -1, 1, 1)
        self.channel_std = torch.tensor(stats["std"] if stats else [1.0] * self.shape[0]).view(1, -1, 1, 1)
        self.vae_name, self._vae, self._warned = vae, None, False
        self._stats_device = None

    def prepare_batch(self, moments: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Moments (N, 2C, h, w) -> model input (N, C, h, w): a posterior sample, scaled or normalised, float32."""
        mean, std = moments.float().chunk(2, dim=1)
        eps = torch.randn(mean.shape, generator=generator, device=mean.device)
        z = mean + std * eps
        if self.normalize == "channel":
            mean, std = self._stats_on(z.device)
            return (z - mean) / std
        return z * self.scale

    def _stats_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Channel mean and std on `device`, copied once (a per-step host-to-device copy would make the GPU wait)."""
        if self._stats_device is None or self._stats_device[0].device != device:
            self._stats_device = (self.channel_mean.to(device), self.channel_std.to(device))
        return self._stats_device

    def unnormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Model space -> raw VAE latents (the inverse of prepare_batch's scaling)."""
        if self.normalize == "channel":
            return x * self.channel_std.to(x.device) + self.channel_mean.to(x.device)
        return x / self.scale

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Model-space latents -> images in [-1, 1] with the store's VAE, loaded on first use. When that VAE cannot
        be loaded, training must not die at its first preview: warn once and show the first 3 latent channels."""
        from .vae import decode_latents, env_vae, load_vae

        z = self.unnormalize(x.float())
        name = env_vae() or self.vae_name
        if self._vae is None and name and not self._warned:
            try:
                self._vae = load_vae(name, device=z.device)
            except DataError as e:
                print(f"warning: previews show raw latent channels: {e}", file=sys.stderr, flush=True)
                self._warned = True
        if self._vae is None:
            v = z[:, :3]
            lo, hi = v.amin(dim=(1, 2, 3), keepdim=True), v.amax(dim=(1, 2, 3), keepdim=True)
            return (v - lo) / (hi - lo).clamp_min(1e-6) * 2 - 1
        self._vae.to(z.device)
        return decode_latents(self._vae, z)

    def __getstate__(self):  # DataLoader workers: never pickle the VAE, an open file or device tensors
        return {k: (None if k in ("_vae", "_mm", "_fm", "_stats_device") else v) for k, v in self.__dict__.items()}


# ----------------------------------------------------------------------------------------------------------------
# The sra store: one contiguous float16 array, memory-mapped
# ----------------------------------------------------------------------------------------------------------------

class LatentStore(LatentDataset):
    """A complete store from `sra prepare`, memory-mapped. `get_batch` gathers a whole batch with one fancy index
    (a C loop, no per-item Python). Warm page cache, 2 busy cores (benchmarks/latent_store_read.py): 4-9x a
    DataLoader over the same store, ~40x one .npy per image; positioned reads and reader threads measured slower.
    Cold, all readers are bound by the disk (mmap faults are served one at a time)."""

    def __init__(self, root, normalize: str | None = None, vae: str | None = None):
        self.root = Path(root)
        h = read_header(root)
        try:
            arr = np.load(self.root / MOMENTS, mmap_mode="r")
            status = np.load(self.root / STATUS)
            labels = np.load(self.root / LABELS)
        except (OSError, ValueError) as e:
            raise DataError(f"latent store {root} is damaged: {e}") from None
        pending = int((status == PENDING).sum())
        if pending:
            raise DataError(f"latent store {root} is incomplete ({pending} of {len(status)} latents not encoded); "
                            "run the same `sra prepare` command again to finish it")
        if len(arr) != len(status) or len(labels) != len(status):
            raise DataError(f"latent store {root} is damaged: moments, status and labels differ in length")
        self.rows = np.flatnonzero(status == DONE)
        row_shape = tuple(arr.shape[1:])
        del arr
        vae_name = vae or h.get("vae", {}).get("name_or_path")
        self._setup(row_shape, labels[self.rows], h["class_names"], h["vae"]["scaling_factor"],
                    h.get("channel_stats"), normalize or h.get("normalize"), vae_name, f"store:{root}")
        self._mm, self._fm = None, None
        self.feature_info = h.get("features")  # {"encoder", "grid", "tokens", "dim"} when features were stored
        self.with_features = False  # set by training when REPA wants them: items become (moments, label, features)

    def __len__(self) -> int:
        return len(self.rows)

    def features(self) -> np.ndarray:
        if self._fm is None:
            self._fm = np.load(self.root / FEATURES, mmap_mode="r")
        return self._fm

    def moments(self) -> np.ndarray:
        if self._mm is None:  # mapped per process (DataLoader workers, torchrun ranks), never pickled
            self._mm = np.load(self.root / MOMENTS, mmap_mode="r")
        return self._mm

    def __getitem__(self, i):
        row = self.rows[int(i)]
        item = torch.from_numpy(np.array(self.moments()[row])), self.labels[i]
        return item + (torch.from_numpy(np.array(self.features()[row])),) if self.with_features else item

    def get_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, ...]:
        idx = torch.as_tensor(indices).long()
        rows = self.rows[idx.numpy()]
        batch = torch.from_numpy(self.moments()[rows]), self.labels[idx]
        return batch + (torch.from_numpy(self.features()[rows]),) if self.with_features else batch


# ----------------------------------------------------------------------------------------------------------------
# The reference layout: one .npy per image (DataLoader path, no get_batch)
# ----------------------------------------------------------------------------------------------------------------

class ReferenceLatents(LatentDataset):
    """REPA/SRA `vae-sd/` folders, read unchanged. File order and labels as their CustomDataset: sorted relative
    paths, labels looked up by path in dataset.json."""

    def __init__(self, root, normalize: str | None = None, vae: str | None = None):
        self.dir = reference_dir(root)
        try:
            entries = json.loads((self.dir / REFERENCE_JSON).read_text())["labels"]
        except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataError(f"cannot read labels from {self.dir / REFERENCE_JSON}: {e}") from None
        if not entries:
            raise DataError(f"{self.dir / REFERENCE_JSON} holds no labels (the reference layout needs class labels)")
        by_name = {str(f).replace("\\", "/"): int(y) for f, y in entries}
        self.files = sorted(str(p.relative_to(self.dir)).replace(os.sep, "/") for p in self.dir.rglob("*.npy"))
        missing = [f for f in self.files if f not in by_name]
        if missing:
            raise DataError(f"{len(missing)} .npy files in {self.dir} have no label in dataset.json, e.g. {missing[0]}")
        labels = np.array([by_name[f] for f in self.files], dtype=np.int64)
        first = np.load(self.dir / self.files[0], mmap_mode="r")
        if first.ndim != 3 or first.shape[0] % 2:
            raise DataError(f"{self.dir / self.files[0]} has shape {first.shape}, not moments (2C, h, w)")
        self._setup(first.shape, labels, [str(i) for i in range(int(labels.max()) + 1)], 0.18215, None, normalize,
                    vae or DEFAULT_VAE, f"reference:{self.dir}")

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        return torch.from_numpy(np.load(self.dir / self.files[i])), self.labels[i]
