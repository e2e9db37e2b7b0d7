"""DiT's DDPM pieces under their earlier name; they live in `sra.process` (ddpm_schedule, ddpm_loss, ddpm_samplers)."""
from ..process.ddpm_loss import diffusion_terms, discretized_gaussian_log_likelihood, normal_kl, vb_bits_per_dim
from ..process.ddpm_samplers import CFG_CHANNELS, METHODS, ddim_step, ddpm_step, guided_output, sample
from ..process.ddpm_schedule import NUM_TIMESTEPS, Diffusion, get_diffusion, linear_betas, space_timesteps

__all__ = ["NUM_TIMESTEPS", "Diffusion", "get_diffusion", "linear_betas", "space_timesteps", "diffusion_terms",
           "discretized_gaussian_log_likelihood", "normal_kl", "vb_bits_per_dim", "CFG_CHANNELS", "METHODS",
           "ddim_step", "ddpm_step", "guided_output", "sample"]
