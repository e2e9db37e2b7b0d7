"""DDPM machinery for DiT: the 1000-step linear schedule, q_sample and the posterior, the learned-variance loss,
respacing, and DDPM / DDIM sampling. Time is an integer step 0..999 (see `schedule`)."""
from .losses import diffusion_terms, discretized_gaussian_log_likelihood, normal_kl, vb_bits_per_dim
from .samplers import CFG_CHANNELS, METHODS, ddim_step, ddpm_step, guided_output, sample
from .schedule import NUM_TIMESTEPS, Diffusion, get_diffusion, linear_betas, space_timesteps

__all__ = ["NUM_TIMESTEPS", "Diffusion", "get_diffusion", "linear_betas", "space_timesteps", "diffusion_terms",
           "discretized_gaussian_log_likelihood", "normal_kl", "vb_bits_per_dim", "CFG_CHANNELS", "METHODS",
           "ddim_step", "ddpm_step", "guided_output", "sample"]
