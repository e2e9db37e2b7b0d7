"""`sra prepare`: images -> ADM center crop -> SD-VAE posterior moments -> a latent store (layout in latents.py).

Work is cut into chunks of source images; rank r of W encodes the pending chunks c with c % W == r. A chunk is
committed by writing its rows, syncing them to disk, then writing its status bytes: an interrupted run (any world size)
redoes only the chunks without status, so nothing is encoded twice and nothing is lost. Writes are positioned writes
of disjoint byte ranges, safe for several ranks on one shared file.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..options import option
from ..runfolder import fault
from .base import (DONE, FEATURES, FILES, FORMAT, HEADER, IMAGE_EXTENSIONS, LABELS, MOMENTS, NORMALIZATIONS, PENDING,
                   SKIP, SKIPPED, STATUS, VERSION, DataError, read_header)


@dataclass(kw_only=True)
class PrepareConfig:
    """The `sra prepare` options, declared once: the fields with `option(...)` are its flags (`sra.options`)."""
    src: str  # class-subfolder image folder, or a list file of `PATH [LABEL]` lines (positional argument)
    out: str  # store folder: created, or resumed when it holds the same store (positional argument)
    resolution: int = option(256, help="image side in pixels after the crop (256 or 512 in the paper; a multiple of "
                                       "the VAE's downsampling, 8 for the SD-VAE)")
    vae: str = option("stabilityai/sd-vae-ft-ema", metavar="NAME",
                      help="AutoencoderKL: local folder, or hub name already in the Hugging Face cache (no download)")
    flip: bool = option(False, help="also store each image's horizontal mirror (doubles the store)")
    normalize: str = option("scale", choices=NORMALIZATIONS,
                            help="latent scaling the store asks for at training time: x 0.18215 or per-channel "
                                 "mean/std")
    batch_size: int = option(64, help="images per VAE forward, per rank")
    chunk_size: int = option(1024, help="source images per commit: the unit of resumption")
    num_workers: int = option(4, help="image decoding processes per rank")
    max_chunks: int | None = option(None, help="stop after this many chunks per rank; the same command resumes")
    encoder: str | None = option(None, metavar="DIR",
                                 help="REPA encoder: a local DINOv2 folder (transformers) or 'fmnist'; its patch "
                                      "features of every image are stored too (float16, tokens x dim per image), so "
                                      "REPA training runs no encoder")
    encoder_grid: int = option(0, help="side of the encoder's token grid: the model's (latent side / patch size); 0 = "
                                       "latent side / 2, the grid of the */2 models")
    progress: bool = option(True, help="show a progress bar with images/s")

    def validate(self) -> None:
        """Every option, before any image is read or the VAE loaded."""
        if self.normalize not in NORMALIZATIONS:
            raise DataError(f"unknown normalisation {self.normalize!r}; choices: {', '.join(NORMALIZATIONS)}")
        if self.resolution <= 0 or self.batch_size <= 0 or self.chunk_size <= 0:
            raise DataError("resolution, batch size and chunk size must be positive")
        if self.num_workers < 0 or (self.max_chunks is not None and self.max_chunks < 1):
            raise DataError("--num-workers must be >= 0 and --max-chunks >= 1")
        if not Path(self.src).exists():
            raise DataError(f"source {self.src} does not exist")
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise DataError(f"output {self.out} is a file, not a folder")


# ----------------------------------------------------------------------------------------------------------------
# Images: listing, the ADM center crop, a loader that never dies on a bad file
# ----------------------------------------------------------------------------------------------------------------

def center_crop_adm(image, size: int) -> np.ndarray:
    """ADM's ImageNet crop (guided-diffusion image_datasets.py): halve with a BOX filter while the short side is at
    least 2x the target, BICUBIC-resize so the short side equals the target, then take the center square. -> uint8
    (size, size, 3)."""
    from PIL import Image

    image = image.convert("RGB")  # grayscale, CMYK, palette, RGBA
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(s * scale) for s in image.size), resample=Image.BICUBIC)
    arr = np.asarray(image)
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return np.ascontiguousarray(arr[top:top + size, left:left + size])


def list_images(src: str | os.PathLike) -> tuple[list[str], np.ndarray, list[str]]:
    """(paths, labels, class names). A folder: classes are its sorted subfolders, images found recursively and sorted.
    A list file: `PATH [LABEL]` per line, paths relative to the file's folder; without labels the class is the parent
    folder's name."""
    src = Path(src)
    if src.is_dir():
        classes = sorted(p.name for p in src.iterdir() if p.is_dir())
        paths, labels = [], []
        for y, c in enumerate(classes):
            found = sorted(os.path.relpath(os.path.join(d, f), src) for d, _, fs in os.walk(src / c) for f in fs
                           if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
            paths += found
            labels += [y] * len(found)
        if not paths:
            raise DataError(f"{src} holds no images in class subfolders (expected {src}/<class>/<image>)")
        return paths, np.array(labels, dtype=np.int64), classes
    if not src.is_file():
        raise DataError(f"source {src} does not exist")
    lines = [ln.strip() for ln in src.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise DataError(f"list file {src} names no images")
    rows = [ln.rsplit(maxsplit=1) for ln in lines]
    base = src.parent.resolve()
    if all(len(r) == 2 and r[1].isdigit() for r in rows):
        paths = [str(base / r[0]) for r in rows]
        labels = np.array([int(r[1]) for r in rows], dtype=np.int64)
        return paths, labels, [str(i) for i in range(int(labels.max()) + 1)]
    if any(len(r) == 2 and r[1].isdigit() for r in rows):
        raise DataError(f"list file {src}: give every line an integer label or none")
    paths = [str(base / ln) for ln in lines]  # no labels (a path may contain spaces)
    parents = [Path(p).parent.name for p in paths]
    classes = sorted(set(parents))
    index = {c: i for i, c in enumerate(classes)}
    return paths, np.array([index[p] for p in parents], dtype=np.int64), classes


class CroppedImages(torch.utils.data.Dataset):
    """(index, uint8 crop or None, error message) per source image; unreadable or truncated files become None."""

    def __init__(self, root: Path, paths: list[str], size: int):
        self.root, self.paths, self.size = root, paths, size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        try:
            with Image.open(self.root / self.paths[i]) as im:
                im.load()
                return i, center_crop_adm(im, self.size), ""
        except Exception as e:  # noqa: BLE001 -- any decoder failure (OSError, SyntaxError, bombs) skips the file
            return i, None, f"{type(e).__name__}: {e}".replace("\n", " ")


def collate(items):
    good = [(i, a) for i, a, _ in items if a is not None]
    bad = [(i, msg) for i, a, msg in items if a is None]
    idx = torch.tensor([i for i, _ in good], dtype=torch.long)
    images = torch.from_numpy(np.stack([a for _, a in good])) if good else None
    return idx, images, bad


# ----------------------------------------------------------------------------------------------------------------
# The store on disk
# ----------------------------------------------------------------------------------------------------------------

def digest(paths: list[str], labels: np.ndarray) -> str:
    h = hashlib.sha256("\n".join(paths).encode())
    h.update(labels.tobytes())
    return h.hexdigest()[:16]


def check_resume(out: Path, want: dict) -> dict | None:
    """The existing header when `out` holds the same store; None when `out` is free; DataError otherwise."""
    old = read_header(out)
    if old is None:
        ours = {HEADER, MOMENTS, LABELS, STATUS, FILES, SKIPPED, FEATURES}
        others = [p.name for p in out.iterdir() if p.name not in ours and ".tmp" not in p.name] \
            if out.is_dir() else []
        if out.exists() and not out.is_dir():
            raise DataError(f"output {out} is a file, not a folder")
        if others:
            raise DataError(f"output folder {out} is not empty and holds no latent store; choose another folder")
        return None  # empty, or an interrupted creation (our files, no header yet): create afresh
    if old.get("source_digest") != want["source_digest"] and old.get("flip") == want["flip"]:
        raise DataError(f"the source changed since {out} was started ({old.get('images')} images then, "
                        f"{want['images']} now); nothing was changed, choose another output folder")
    keys = ("resolution", "flip", "count")  # not chunk_size: status is per row
    diffs = [f"{k}={old.get(k)} (asked: {want[k]})" for k in keys if old.get(k) != want[k]]
    if old.get("features", {}).get("encoder") != want.get("features", {}).get("encoder"):
        diffs.append(f"encoder={old.get('features', {}).get('encoder')} (asked: "
                     f"{want.get('features', {}).get('encoder')})")
    if old.get("vae", {}).get("name_or_path") != want["vae"]["name_or_path"]:
        diffs.append(f"vae={old.get('vae', {}).get('name_or_path')} (asked: {want['vae']['name_or_path']})")
    if diffs:
        raise DataError(f"output folder {out} holds another store ({'; '.join(diffs)}); nothing was changed, "
                        "choose another folder")
    return old


def create_store(out: Path, header: dict, paths: list[str], labels: np.ndarray, row_shape) -> None:
    """Allocate (sparse) arrays, then write the header last: a store without a header is not a store."""
    out.mkdir(parents=True, exist_ok=True)
    n = header["count"]
    # Opening a memmap writes the .npy header and a sparse file; the rows come later by positioned writes.
    np.lib.format.open_memmap(out / MOMENTS, mode="w+", dtype=np.float16, shape=(n, *row_shape))
    if "features" in header:
        f = header["features"]
        np.lib.format.open_memmap(out / FEATURES, mode="w+", dtype=np.float16, shape=(n, f["tokens"], f["dim"]))
    np.save(out / STATUS, np.zeros(n, dtype=np.uint8))
    np.save(out / LABELS, labels)
    (out / FILES).write_text("".join(p + "\n" for p in paths))
    (out / SKIPPED).write_text("")
    write_json(out / HEADER, header)


def write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1) + "\n")
    os.replace(tmp, path)


def pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def npy_offset(path: Path) -> int:
    arr = np.load(path, mmap_mode="r")
    offset = arr.offset
    del arr
    return offset


class StoreWriter:
    """Positioned writes of one chunk: rows, fdatasync, skipped lines, then the status bytes (the commit)."""

    def __init__(self, out: Path):
        self.out = out
        self.moments = os.open(out / MOMENTS, os.O_RDWR)
        self.status = os.open(out / STATUS, os.O_RDWR)
        self.m_off, self.s_off = npy_offset(out / MOMENTS), npy_offset(out / STATUS)
        self.features = os.open(out / FEATURES, os.O_RDWR) if (out / FEATURES).exists() else None
        self.f_off = npy_offset(out / FEATURES) if self.features is not None else 0

    def commit(self, first_row: int, rows: np.ndarray, status: np.ndarray, skipped: list[str],
               features: np.ndarray | None = None) -> None:
        for fd, off, arr in ((self.moments, self.m_off, rows), (self.features, self.f_off, features)):
            if fd is None:
                continue
            data = np.ascontiguousarray(arr, dtype=np.float16)
            pwrite_all(fd, data.tobytes(), off + first_row * (data.nbytes // len(data)))
            os.fdatasync(fd)
        fault("chunk-commit")  # tests: a kill between the rows and their commit mark
        if skipped:
            with open(self.out / SKIPPED, "a") as f:
                f.write("".join(s + "\n" for s in skipped))
        pwrite_all(self.status, np.ascontiguousarray(status, dtype=np.uint8).tobytes(), self.s_off + first_row)
        os.fdatasync(self.status)

    def close(self):
        for fd in (self.moments, self.status, self.features):
            if fd is not None:
                os.close(fd)


def finalize(out: Path, header: dict, max_rows: int = 65536) -> dict:
    """After the last chunk: per-channel statistics of z (from up to `max_rows` evenly spaced rows, float64:
    E[z] = E[mean], Var[z] = E[mean^2] + E[std^2] - E[z]^2), deduplicated skipped.txt, header marked complete."""
    status = np.load(out / STATUS)
    moments = np.load(out / MOMENTS, mmap_mode="r")
    ok = np.flatnonzero(status == DONE)
    if len(ok) == 0:
        raise DataError(f"no image in {header['source']} could be read; see {out / SKIPPED}")
    pick = ok[np.linspace(0, len(ok) - 1, min(len(ok), max_rows)).astype(np.int64)]
    c = moments.shape[1] // 2
    s1, s2 = np.zeros(c), np.zeros(c)
    for k in range(0, len(pick), 4096):
        m = moments[pick[k:k + 4096]].astype(np.float64)
        mean, std = m[:, :c], m[:, c:]
        s1 += mean.mean(axis=(2, 3)).sum(0)
        s2 += (mean ** 2 + std ** 2).mean(axis=(2, 3)).sum(0)
    mu = s1 / len(pick)
    sigma = np.sqrt(np.maximum(s2 / len(pick) - mu ** 2, 1e-12))
    lines = [ln for ln in (out / SKIPPED).read_text().splitlines() if ln]
    unique = dict((ln.split("\t")[0], ln) for ln in lines)
    tmp = out / (SKIPPED + f".tmp{os.getpid()}")
    tmp.write_text("".join(v + "\n" for _, v in sorted(unique.items())))
    os.replace(tmp, out / SKIPPED)
    header = dict(header, complete=True, encoded=int(len(ok)), skipped=int((status == SKIP).sum()),
                  channel_stats={"mean": mu.tolist(), "std": sigma.tolist()})
    write_json(out / HEADER, header)
    return header


def encoder_features(encoder, images: torch.Tensor, grid: int) -> torch.Tensor:
    """uint8 crops (N, H, W, 3) -> the encoder's patch features (N, grid^2, D), from the image in [-1, 1] as training
    would hand it over (1-channel encoders get the mean of R, G, B)."""
    from ..encoders import encode

    x = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if getattr(encoder, "channels", 3) == 1:
        x = x.mean(1, keepdim=True)
    return encode(encoder, x, grid)


# ----------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------

def prepare(cfg: PrepareConfig) -> dict:
    """Encode `cfg.src` into the store `cfg.out`, or resume it. Returns a summary dict."""
    from .. import distributed
    from .vae import encode_moments, load_vae, vae_info

    cfg.validate()
    ctx = distributed.init(timeout_s=3600.0)
    out, src = Path(cfg.out), Path(cfg.src)
    paths, labels, class_names = list_images(src)
    root = src if src.is_dir() else Path("/")  # list files hold absolute paths after list_images
    vae = load_vae(cfg.vae, device=ctx.device)
    info = vae_info(vae, cfg.vae)
    if cfg.resolution % info["downsample"]:
        raise DataError(f"resolution {cfg.resolution} is not a multiple of the VAE's downsampling {info['downsample']}")
    side = cfg.resolution // info["downsample"]
    copies = 2 if cfg.flip else 1
    encoder, grid = None, cfg.encoder_grid or side // 2
    if cfg.encoder:
        from ..encoders import load_encoder
        try:
            encoder = load_encoder(cfg.encoder, ctx.device)
        except ValueError as e:
            raise DataError(str(e)) from None
    header = {"format": FORMAT, "version": VERSION, "source": str(src.resolve()), "resolution": cfg.resolution,
              "latent_shape": [info["latent_channels"], side, side], "dtype": "float16", "flip": cfg.flip,
              "count": len(paths) * copies, "images": len(paths), "chunk_size": cfg.chunk_size,
              "source_digest": digest(paths, labels), "vae": info, "normalize": cfg.normalize,
              "class_names": class_names, "complete": False}
    if encoder is not None:  # REPA targets stored once, so that training runs no encoder (encoders/)
        header["features"] = {"encoder": encoder.name, "grid": grid, "tokens": grid * grid, "dim": encoder.dim,
                              "dtype": "float16"}
    old = check_resume(out, header)
    if old is None and ctx.is_main:
        create_store(out, header, paths, np.repeat(labels, copies), (2 * info["latent_channels"], side, side))
    distributed.barrier()
    if old is not None and old.get("complete"):
        distributed.shutdown()
        return {"store": str(out), "rank": ctx.rank, "encoded_now": 0, "pending": 0, "encoded": old["encoded"],
                "skipped": old["skipped"]}
    header = old or header

    # This rank's pending chunks: those without a committed status byte.
    status = np.load(out / STATUS)
    n_chunks = -(-len(paths) // cfg.chunk_size)
    pending = [c for c in range(ctx.rank, n_chunks, ctx.world_size)
               if (status[c * cfg.chunk_size * copies:(c + 1) * cfg.chunk_size * copies] == PENDING).any()]
    if cfg.max_chunks is not None:
        pending = pending[:cfg.max_chunks]
    batches = [list(range(s, min(s + cfg.batch_size, (c + 1) * cfg.chunk_size, len(paths))))
               for c in pending for s in range(c * cfg.chunk_size, min((c + 1) * cfg.chunk_size, len(paths)),
                                               cfg.batch_size)]
    loader = torch.utils.data.DataLoader(CroppedImages(root, paths, cfg.resolution), batch_sampler=batches,
                                         collate_fn=collate, num_workers=cfg.num_workers,
                                         pin_memory=ctx.device.type == "cuda",
                                         prefetch_factor=4 if cfg.num_workers else None)
    from tqdm.auto import tqdm
    bar = tqdm(total=sum(len(b) for b in batches), disable=not (ctx.is_main and cfg.progress), unit="img",
               desc=f"encode (rank 0 of {ctx.world_size})", dynamic_ncols=True, smoothing=0.05)
    writer, c_shape = StoreWriter(out), (2 * info["latent_channels"], side, side)
    chunk, rows, feats, stat, skipped, t0, done_imgs = None, None, None, None, [], time.perf_counter(), 0
    for batch, (idx, images, bad) in zip(batches, loader):
        c = batch[0] // cfg.chunk_size
        if c != chunk:  # a new chunk: fresh buffers
            chunk, lo = c, c * cfg.chunk_size
            hi = min(lo + cfg.chunk_size, len(paths))
            rows = np.zeros(((hi - lo) * copies, *c_shape), np.float16)
            if encoder is not None:
                feats = np.zeros(((hi - lo) * copies, grid * grid, encoder.dim), np.float16)
            stat, skipped = np.full((hi - lo) * copies, SKIP, np.uint8), []
        if images is not None:
            x = images.to(ctx.device, non_blocking=True)
            if cfg.flip:  # mirror of the crop, as a training-time flip would see it
                x = torch.stack([x, x.flip(2)], dim=1).flatten(0, 1)
            m = encode_moments(vae, x).to(torch.float16).cpu().numpy()
            where = ((idx.numpy() - lo)[:, None] * copies + np.arange(copies)).reshape(-1)
            rows[where], stat[where] = m, DONE
            if encoder is not None:
                feats[where] = encoder_features(encoder, x, grid).to(torch.float16).cpu().numpy()
        skipped += [f"{paths[i]}\t{msg}" for i, msg in bad]
        bar.update(len(batch))
        done_imgs += len(batch)
        if batch[-1] == hi - 1:  # the chunk's last batch: commit it
            writer.commit(lo * copies, rows, stat, skipped, feats)
    bar.close()
    writer.close()
    rate = done_imgs / max(time.perf_counter() - t0, 1e-9)

    # Whoever finds every chunk committed finalises (no end barrier: ranks may finish hours apart).
    status = np.load(out / STATUS)
    left = int((status == PENDING).sum())
    summary = {"store": str(out), "rank": ctx.rank, "encoded_now": done_imgs, "images_per_s": rate, "pending": left}
    if left == 0:
        header = finalize(out, header)
        summary.update(encoded=header["encoded"], skipped=header["skipped"])
    distributed.shutdown()
    return summary
