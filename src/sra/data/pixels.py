"""Pixel-space datasets: Fashion-MNIST (IDX files), scikit-learn's digits, and class-subfolder image folders.

Every dataset here is a `torch.utils.data.Dataset` of `(x, y)` with x a float tensor (C, H, W) in [-1, 1], and has
`shape`, `num_classes`, `class_names` and `prepare_batch(x, generator)` (identity for pixels; latent stores sample the
VAE posterior there).
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .base import IMAGE_EXTENSIONS, DataError

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped): big-endian header, magic 0x08 (uint8) then ndim, then the dims."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    count = int(np.prod(dims)) if dims else 0
    if len(data) - offset != count:
        raise DataError(f"{path} is truncated: expected {count} bytes of data, found {len(data) - offset}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims).copy()


def find_idx(root: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (root / name).exists():
            return root / name
    return None


def load_fashion_mnist(root: str | os.PathLike | None = None, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of Fashion-MNIST's `train` or `test` split."""
    prefix = {"train": "train", "test": "t10k"}[split]
    roots = [Path(root)] if root is not None else [Path(d) for d in FASHION_MNIST_DIRS]
    for r in roots:
        img, lab = find_idx(r, f"{prefix}-images-idx3-ubyte"), find_idx(r, f"{prefix}-labels-idx1-ubyte")
        if img and lab:
            images, labels = read_idx(img), read_idx(lab)
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise DataError(f"IDX files in {r} do not hold matching images and labels")
            return images, labels.astype(np.int64)
    raise DataError(f"no Fashion-MNIST {split} IDX files in {', '.join(map(str, roots))} "
                    "(install Debian's dataset-fashion-mnist or pass --data-dir)")


def fashion_mnist_available(root: str | os.PathLike | None = None) -> bool:
    try:
        load_fashion_mnist(root, "test")
        return True
    except DataError:
        return False


def to_model_range(images_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    x = torch.as_tensor(np.asarray(images_uint8)).float()
    return x / 127.5 - 1.0


class TensorImageDataset(Dataset):
    """An in-memory image dataset: x (N, C, H, W) float in [-1, 1], y (N,) int64."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, class_names: list[str] | tuple[str, ...], name: str):
        if len(x) == 0:
            raise DataError(f"dataset {name} is empty")
        self.x, self.y = x.contiguous(), y.long()
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.shape = tuple(x.shape[1:])
        self.name = name

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def get_batch(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fast path for in-memory data: one gather instead of a DataLoader."""
        return self.x[indices], self.y[indices]

    def prepare_batch(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x


def fashion_mnist_dataset(root=None, split: str = "train", pad_to: int = 32) -> TensorImageDataset:
    """Fashion-MNIST in [-1, 1], 1 channel, 28x28 padded to `pad_to` with the background value (-1)."""
    images, labels = load_fashion_mnist(root, split)
    x = to_model_range(images)[:, None]
    pad = (pad_to - x.shape[-1]) // 2
    if pad > 0:
        x = torch.nn.functional.pad(x, (pad, pad, pad, pad), value=-1.0)
    return TensorImageDataset(x, torch.from_numpy(labels), FASHION_MNIST_CLASSES, "fashion-mnist")


def digits_dataset(split: str = "train", size: int = 8) -> TensorImageDataset:
    """scikit-learn's bundled 8x8 digits (values 0..16), in [-1, 1]; first 1500 train, the rest test."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images).float()[:, None] / 8.0 - 1.0
    y = torch.from_numpy(d.target).long()
    x, y = (x[:1500], y[:1500]) if split == "train" else (x[1500:], y[1500:])
    if size != 8:
        x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return TensorImageDataset(x, y, [str(i) for i in range(10)], "digits")


def image_folder_dataset(root: str | os.PathLike, channels: int | None = None) -> TensorImageDataset:
    """Class-subfolder images (root/<class>/<image>), all of one size; loaded into memory.

    `channels` 1 or 3 converts every image; None keeps the mode of the first image (grayscale or RGB).
    """
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).iterdir())
             if f.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise DataError(f"data folder {root} holds no images in class subfolders (expected {root}/<class>/<image>)")
    arrays, labels, size = [], [], None
    for f, label in files:
        try:
            with Image.open(f) as im:
                if channels is None:
                    channels = 1 if im.mode in ("L", "1", "I;16", "I") else 3
                im = im.convert("L" if channels == 1 else "RGB")
                a = np.asarray(im, dtype=np.uint8)
        except OSError as e:
            raise DataError(f"cannot read image {f}: {e}") from None
        if size is None:
            size = a.shape[:2]
        elif a.shape[:2] != size:
            raise DataError(f"image {f} is {a.shape[1]}x{a.shape[0]} but the first image is {size[1]}x{size[0]}; "
                            "resize the folder to one size first")
        arrays.append(a)
        labels.append(label)
    x = to_model_range(np.stack(arrays))
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    return TensorImageDataset(x, torch.tensor(labels), classes, f"folder:{root}")
