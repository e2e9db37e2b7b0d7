from .path import PATHS, TIME_SAMPLINGS, expand_like, interpolate, path_coefficients, sample_time
from .samplers import (euler_maruyama_sampler, euler_sampler, guided_velocity, randn_per_image, score_from_velocity,
                       step_cfg_scale)

__all__ = ["PATHS", "TIME_SAMPLINGS", "expand_like", "interpolate", "path_coefficients", "sample_time",
           "euler_sampler", "euler_maruyama_sampler", "guided_velocity", "randn_per_image", "score_from_velocity",
           "step_cfg_scale"]
