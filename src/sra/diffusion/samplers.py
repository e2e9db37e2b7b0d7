"""The public DiT sampler, `sample` (DDPM/DDIM on respaced steps, DiT's guidance protocol): it lives in
`sra.process.ddpm_samplers`."""
from ..process.ddpm_samplers import CFG_CHANNELS, METHODS, ddim_step, ddpm_step, guided_output, sample

__all__ = ["CFG_CHANNELS", "METHODS", "ddim_step", "ddpm_step", "guided_output", "sample"]
