"""Which dataset a --data-dir names: the one place that chooses between pixel datasets and latent stores."""
from __future__ import annotations

from pathlib import Path

from .base import HEADER, DataError, is_latent_store
from .latents import open_latent_store
from .pixels import (FASHION_MNIST_DIRS, digits_dataset, fashion_mnist_available, fashion_mnist_dataset, find_idx,
                     image_folder_dataset)


def default_data_dir() -> str:
    """What an unset --data-dir loads, spelled out (`sra train --dry-run` shows it): the folder of Debian's
    Fashion-MNIST IDX files, else 'digits' (scikit-learn's 8x8 digits)."""
    return next((d for d in FASHION_MNIST_DIRS if fashion_mnist_available(d)), "digits")


def load_dataset(data_dir: str | None = None, split: str = "train"):
    """Resolve --data-dir: None -> Fashion-MNIST from the Debian package, else digits; a folder of IDX files ->
    Fashion-MNIST (MNIST-format) from there; a latent store -> latents; otherwise an image folder."""
    if data_dir is None:
        if fashion_mnist_available():
            return fashion_mnist_dataset(split=split)
        return digits_dataset(split=split)
    if data_dir == "digits":
        return digits_dataset(split=split)
    root = Path(data_dir)
    if not root.exists():
        raise DataError(f"data folder {root} does not exist")
    if find_idx(root, "train-images-idx3-ubyte") or find_idx(root, "t10k-images-idx3-ubyte"):
        return fashion_mnist_dataset(root, split=split)
    if is_latent_store(root):
        return open_latent_store(root)
    if (root / HEADER).exists():  # a store whose header is torn, empty or foreign: say so, not "no images"
        raise DataError(f"{root / HEADER} is not a readable sra latent-store header (truncated, not JSON, or another "
                        f"format; sra writes it atomically, so something else changed it); rebuild the store with `sra prepare SRC "
                        f"{root}` (it encodes it again) or point --data-dir at another folder")
    return image_folder_dataset(root)
