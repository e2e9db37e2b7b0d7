"""Public sampling API (see shared design): samplers live in sra.transport (SiT) and sra.diffusion (DiT)."""
from .transport.samplers import euler_maruyama_sampler, euler_sampler

__all__ = ["euler_sampler", "euler_maruyama_sampler"]
