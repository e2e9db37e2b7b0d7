from .pixels import (DataError, FASHION_MNIST_CLASSES, TensorImageDataset, digits_dataset, fashion_mnist_available,
                     fashion_mnist_dataset, image_folder_dataset, load_dataset, load_fashion_mnist, read_idx)
from .latents import is_latent_store, open_latent_store

__all__ = ["DataError", "FASHION_MNIST_CLASSES", "TensorImageDataset", "digits_dataset", "fashion_mnist_available",
           "fashion_mnist_dataset", "image_folder_dataset", "is_latent_store", "load_dataset", "load_fashion_mnist",
           "open_latent_store", "read_idx"]
