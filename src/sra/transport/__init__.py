from .path import PATHS, TIME_SAMPLINGS, expand_like, interpolate, path_coefficients, sample_time
from .samplers import euler_sampler, guided_velocity

__all__ = ["PATHS", "TIME_SAMPLINGS", "expand_like", "interpolate", "path_coefficients", "sample_time",
           "euler_sampler", "guided_velocity"]
