from .base import DataError
from .base import is_latent_store
from .latents import open_latent_store
from .pixels import (FASHION_MNIST_CLASSES, TensorImageDataset, digits_dataset, fashion_mnist_available,
                     fashion_mnist_dataset, image_folder_dataset, load_fashion_mnist, read_idx)
from .sources import load_dataset

__all__ = ["DataError", "FASHION_MNIST_CLASSES", "TensorImageDataset", "digits_dataset", "fashion_mnist_available",
           "fashion_mnist_dataset", "image_folder_dataset", "is_latent_store", "load_dataset", "load_fashion_mnist",
           "open_latent_store", "read_idx"]
