from .dit import DiffusionTransformer, ProjectionHead, TokenTimes, timestep_frequencies, sincos_pos_embed_2d
from .presets import MODEL_NAMES, build_model, parse_name

__all__ = ["DiffusionTransformer", "ProjectionHead", "TokenTimes", "timestep_frequencies", "sincos_pos_embed_2d",
           "MODEL_NAMES", "build_model", "parse_name"]
from .loading import LoadedModel, architecture_from_state, load_model

__all__ += ["LoadedModel", "architecture_from_state", "load_model"]
