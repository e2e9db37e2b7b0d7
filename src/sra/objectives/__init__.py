"""Terms that compose with any process (sra.process): the denoising loss the process gives, SRA alignment, token
groups (a view of the batch), REPA and Dispersive Loss. One objective = a process + terms + weights; `combine` is the
only place weights meet. A term registers itself (`objective.register`); importing this package registers the
built-in ones, in the order they are computed and logged."""
from __future__ import annotations

from .objective import TERMS, Batch, Objective, Preset, apply_label_drop, combine, register, slice_draws, unwrap
from .align import COSINES, DISTANCES, SRA, AlignConfig, token_distance  # noqa: E402  (registers "align")
from .repa import REPA, RepaConfig  # noqa: E402  (registers "repa")
from .dispersive import DispConfig, Dispersive, dispersive_loss  # noqa: E402  (registers "disp")
from .selftrans import HeadConfig, SelfTransConfig  # noqa: E402  (registers "st_head", "selftrans")
from .dts import TEACHER_TIMES, MixConfig

__all__ = ["AlignConfig", "Batch", "COSINES", "DISTANCES", "DispConfig", "Dispersive", "HeadConfig", "MixConfig", "Objective",
           "Preset", "REPA", "RepaConfig", "SRA", "SelfTransConfig", "TEACHER_TIMES", "TERMS", "apply_label_drop", "combine",
           "dispersive_loss", "register", "slice_draws", "token_distance", "unwrap"]
