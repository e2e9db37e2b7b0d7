"""SiT's flow-matching pieces under their earlier name; they live in `sra.process` (flow_path, flow_samplers)."""
from ..process.base import randn_per_image
from ..process.flow_path import PATHS, TIME_SAMPLINGS, expand_like, interpolate, path_coefficients, sample_time
from ..process.flow_samplers import (euler_maruyama_sampler, euler_sampler, guided_velocity, score_from_velocity,
                                     step_cfg_scale)

__all__ = ["PATHS", "TIME_SAMPLINGS", "expand_like", "interpolate", "path_coefficients", "sample_time",
           "euler_sampler", "euler_maruyama_sampler", "guided_velocity", "randn_per_image", "score_from_velocity",
           "step_cfg_scale"]
