"""Public sampling API for SiT models: the ODE and SDE samplers of `sra.process.flow_samplers`."""
from .process.flow_samplers import euler_maruyama_sampler, euler_sampler

__all__ = ["euler_sampler", "euler_maruyama_sampler"]
