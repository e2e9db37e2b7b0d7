"""sra: diffusion transformers (SiT, DiT) trained with Self-Representation Alignment (arXiv 2505.02831).

The public API: `build_model` / `MODEL_NAMES` (the presets), the SiT samplers `euler_sampler` (ODE) and
`euler_maruyama_sampler` (SDE), DiT's DDPM/DDIM sampler `ddpm_sample` (`sra.process.ddpm_samplers.sample`), and the
evaluation pieces `frechet_distance` and `InceptionV3Features`."""
__version__ = "0.1.0"

from .evaluation.inception import InceptionV3Features
from .evaluation.metrics import frechet_distance
from .models import MODEL_NAMES, build_model
from .process.ddpm_samplers import sample as ddpm_sample
from .process.flow_samplers import euler_maruyama_sampler, euler_sampler

__all__ = ["build_model", "MODEL_NAMES", "__version__", "euler_sampler", "euler_maruyama_sampler", "ddpm_sample",
           "frechet_distance", "InceptionV3Features"]
