"""Read throughput (latents/s) of an `sra prepare` store against the reference layout (one float32 .npy per image),
for random training batches, with the page cache warm and cold (evicted with posix_fadvise before each pass).

    .venv/bin/python benchmarks/latent_store_read.py [--n 10000] [--batch 256] [--batches 20] [--dir /tmp]

Prints one JSON line. Latents are SD-VAE shaped: moments (8, 32, 32) per image (256 x 256 images).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def build(root: Path, n: int) -> tuple[Path, Path]:
    """The same random moments as an sra store (header + float16 array) and as a reference vae-sd/ folder."""
    from sra.data.base import DONE, FORMAT, HEADER, LABELS, MOMENTS, STATUS, VERSION

    rng = np.random.default_rng(0)
    store, ref = root / "store", root / "ref"
    (store).mkdir()
    mm = np.lib.format.open_memmap(store / MOMENTS, mode="w+", dtype=np.float16, shape=(n, 8, 32, 32))
    labels = rng.integers(0, 1000, n)
    entries = []
    for lo in range(0, n, 1000):
        block = rng.normal(size=(min(1000, n - lo), 8, 32, 32)).astype(np.float32)
        mm[lo:lo + len(block)] = block
        for k, m in enumerate(block):
            i = lo + k
            name = f"{i // 1000:05d}/img-mean-std-{i:08d}.npy"
            (ref / "vae-sd" / name).parent.mkdir(parents=True, exist_ok=True)
            np.save(ref / "vae-sd" / name, m)
            entries.append([name, int(labels[i])])
    mm.flush()
    del mm
    np.save(store / LABELS, labels)
    np.save(store / STATUS, np.full(n, DONE, np.uint8))
    header = {"format": FORMAT, "version": VERSION, "resolution": 256, "latent_shape": [4, 32, 32], "complete": True,
              "vae": {"name_or_path": None, "scaling_factor": 0.18215}, "class_names": [str(i) for i in range(1000)]}
    (store / HEADER).write_text(json.dumps(header))
    (ref / "vae-sd" / "dataset.json").write_text(json.dumps({"labels": entries}))
    return store, ref


def evict(root: Path) -> None:
    """Drop the files' pages from the page cache (no root needed for our own files)."""
    for d, _, files in os.walk(root):
        for f in files:
            fd = os.open(os.path.join(d, f), os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)


def warm(root: Path) -> None:
    for d, _, files in os.walk(root):
        for f in files:
            with open(os.path.join(d, f), "rb") as fh:
                while fh.read(1 << 24):
                    pass


def readers(store, ref, workers: int) -> dict:
    """name -> function reading every batch of a list of index tensors."""
    def direct(get):
        return lambda index_batches: [get(i) for i in index_batches]

    def loader(ds, w):
        return lambda index_batches: list(torch.utils.data.DataLoader(
            ds, batch_sampler=[i.tolist() for i in index_batches], num_workers=w,
            prefetch_factor=4 if w else None))

    return {"store_get_batch": direct(store.get_batch),
            "store_dataloader_0w": loader(store, 0),
            f"store_dataloader_{workers}w": loader(store, workers),
            "npy_files_dataloader_0w": loader(ref, 0),
            f"npy_files_dataloader_{workers}w": loader(ref, workers)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10000, help="latents in each layout")
    p.add_argument("--batch", type=int, default=256, help="latents per random batch")
    p.add_argument("--batches", type=int, default=20, help="batches per measurement")
    p.add_argument("--workers", type=int, default=2, help="DataLoader worker processes for the *_Nw rows")
    p.add_argument("--dir", default=None, help="scratch folder (default: the system temp folder)")
    a = p.parse_args()
    from sra.data.latents import open_latent_store

    root = Path(tempfile.mkdtemp(prefix="sra-latent-bench-", dir=a.dir))
    try:
        t = time.perf_counter()
        store_dir, ref_dir = build(root, a.n)
        result = {"n": a.n, "batch": a.batch, "batches": a.batches, "cpus": os.cpu_count(),
                  "build_s": round(time.perf_counter() - t, 1), "unit": "latents/s"}
        store, ref = open_latent_store(store_dir), open_latent_store(ref_dir)
        g = torch.Generator().manual_seed(0)
        for cache in ("warm", "cold"):
            if cache == "warm":
                warm(root)
            for name, read in readers(store, ref, a.workers).items():
                idx = [torch.randperm(a.n, generator=g)[:a.batch] for _ in range(a.batches)]
                if cache == "cold":
                    store._mm = None  # unmap, so that eviction reaches every page
                    evict(root)
                t = time.perf_counter()
                read(idx)
                result[f"{cache}_{name}"] = round(a.batch * a.batches / (time.perf_counter() - t))
        print(json.dumps(result))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
