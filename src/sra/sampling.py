"""Public sampling API (see shared design): samplers live in sra.transport (SiT) and sra.diffusion (DiT)."""
from .transport.samplers import euler_sampler

__all__ = ["euler_sampler"]
