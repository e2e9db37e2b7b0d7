"""Image sets to evaluate: ADM-format .npz files (`arr_0`: uint8 N x H x W x 3) read in batches without loading the
whole array, and folders of PNG/JPEG files. Every set yields uint8 (n, H, W, C) batches with C = 1 or 3."""
from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from ..data.base import IMAGE_EXTENSIONS

STATS_KEYS = ("mu", "sigma")


class NpzImages:
    """`arr_0` of an .npz, streamed from the zip member (a 50K x 256 x 256 x 3 batch is 9.8 GB)."""

    def __init__(self, path: Path):
        self.path, self.name = path, str(path)
        with zipfile.ZipFile(path) as zf:
            if "arr_0.npy" not in zf.namelist():
                keys = ", ".join(n[:-4] for n in zf.namelist() if n.endswith(".npy")) or "none"
                raise ValueError(f"{path} has no arr_0 (arrays: {keys}); expected ADM format: "
                                 "arr_0 uint8 N x H x W x 3")
            with zf.open("arr_0.npy") as f:
                shape, dtype, self._offset = read_npy_header(f, path)
        if dtype != np.uint8:
            raise ValueError(f"{path}: arr_0 is {dtype}, expected uint8 images in [0, 255] (ADM format)")
        if len(shape) == 3:
            shape = (*shape, 1)
        if len(shape) != 4 or shape[3] not in (1, 3):
            raise ValueError(f"{path}: arr_0 has shape {shape}, expected N x H x W x 3 (or N x H x W for grayscale)")
        self.num_images, self.image_shape = shape[0], tuple(shape[1:])

    def batches(self, batch_size: int):
        row = int(np.prod(self.image_shape))
        with zipfile.ZipFile(self.path) as zf, zf.open("arr_0.npy") as f:
            f.read(self._offset)
            for start in range(0, self.num_images, batch_size):
                n = min(batch_size, self.num_images - start)
                buf = f.read(n * row)
                if len(buf) != n * row:
                    raise ValueError(f"{self.path}: arr_0 is truncated at image {start}")
                yield np.frombuffer(bytearray(buf), np.uint8).reshape(n, *self.image_shape)  # writable for torch


def read_npy_header(f, path) -> tuple[tuple, np.dtype, int]:
    version = np.lib.format.read_magic(f)
    reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if reader is None:
        raise ValueError(f"{path}: unsupported .npy version {version}")
    shape, fortran, dtype = reader(f)
    if fortran and len(shape) > 1:
        raise ValueError(f"{path}: arr_0 is stored in Fortran order; save it with np.savez from a C-ordered array")
    return tuple(shape), np.dtype(dtype), f.tell()


class FolderImages:
    """Image files of one folder (not recursive), sorted by name; all must have one size."""

    def __init__(self, path: Path):
        from PIL import Image

        self.path, self.name = path, str(path)
        self.files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not self.files:
            raise ValueError(f"folder {path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        sizes, gray = set(), True
        for p in self.files:  # headers only: cheap
            try:
                with Image.open(p) as im:
                    sizes.add(im.size)
                    gray &= im.mode in ("L", "1", "I;16", "I")
            except OSError as e:
                raise ValueError(f"cannot read image {p}: {e}") from None
            if len(sizes) > 1:
                raise ValueError(f"images in {path} have mixed sizes ({' and '.join(f'{w}x{h}' for w, h in sizes)}, "
                                 f"first mismatch at {p.name}); resize them to one size first")
        (w, h), = sizes
        self.num_images, self.image_shape = len(self.files), (h, w, 1 if gray else 3)

    def batches(self, batch_size: int):
        from PIL import Image

        mode = "L" if self.image_shape[2] == 1 else "RGB"
        for start in range(0, self.num_images, batch_size):
            arrays = []
            for p in self.files[start:start + batch_size]:
                with Image.open(p) as im:
                    arrays.append(np.asarray(im.convert(mode), np.uint8).reshape(self.image_shape))
            yield np.stack(arrays)


def open_images(path: str | os.PathLike) -> NpzImages | FolderImages:
    path = Path(path)
    if path.is_dir():
        return FolderImages(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix != ".npz":
        raise ValueError(f"{path}: expected an .npz file (arr_0 uint8 N x H x W x 3) or a folder of images")
    try:
        return NpzImages(path)
    except zipfile.BadZipFile:
        raise ValueError(f"{path} is not a valid .npz file") from None


def npz_keys(path: str | os.PathLike) -> set[str]:
    """Names of the arrays of an .npz file (empty for a folder)."""
    path = Path(path)
    if path.is_dir() or path.suffix != ".npz":
        return set()
    if not path.exists():  # called missing, not unreadable (a mistyped --eval-ref or REFERENCE)
        raise FileNotFoundError(f"{path} does not exist")
    try:
        with zipfile.ZipFile(path) as zf:
            return {n[:-4] for n in zf.namelist() if n.endswith(".npy")}
    except (zipfile.BadZipFile, FileNotFoundError):
        raise ValueError(f"{path} is not a readable .npz file") from None


def load_arrays(path: str | os.PathLike, keys) -> dict[str, np.ndarray]:
    """Small arrays (statistics, labels) of an .npz, without touching arr_0."""
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in keys if k in z.files}
