"""sra: diffusion transformers (SiT, DiT) trained with Self-Representation Alignment (arXiv 2505.02831)."""
from .models import build_model, MODEL_NAMES

__version__ = "0.1.0"
__all__ = ["build_model", "MODEL_NAMES", "__version__"]
