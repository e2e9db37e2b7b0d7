"""Terms that compose with any process (sra.process): the denoising loss the process gives, SRA alignment, token
groups (a view of the batch), REPA and Dispersive Loss. One objective = a process + terms + weights; `combine` is the
only place weights meet. Adding a method is one term file (its config, its term class) plus a line in `Objective`."""
from __future__ import annotations

from ..process import DDPMProcess, FlowProcess
from .align import COSINES, DISTANCES, SRA, AlignConfig, token_distance
from .dispersive import DispConfig, Dispersive, dispersive_loss
from .dts import TEACHER_TIMES, MixConfig
from .objective import Batch, FlowConfig, Objective, apply_label_drop, combine, slice_draws, unwrap
from .repa import REPA, RepaConfig


def FlowObjective(cfg: FlowConfig, align: AlignConfig, mix: MixConfig | None = None, patch_size: int = 2,
                  repa: RepaConfig | None = None, encoder=None, disp: DispConfig | None = None) -> Objective:
    """The objective on SiT's flow process (an earlier name, kept for callers)."""
    return Objective(FlowProcess(cfg.path, cfg.time_sampling), align, mix, patch_size, repa, encoder, disp)


def DiffusionObjective(align: AlignConfig, mix: MixConfig | None = None, patch_size: int = 2,
                       repa: RepaConfig | None = None, encoder=None, disp: DispConfig | None = None) -> Objective:
    """The objective on DiT's DDPM process (an earlier name, kept for callers)."""
    return Objective(DDPMProcess(), align, mix, patch_size, repa, encoder, disp)


__all__ = ["AlignConfig", "Batch", "COSINES", "DISTANCES", "DispConfig", "Dispersive", "DiffusionObjective",
           "FlowConfig", "FlowObjective", "MixConfig", "Objective", "REPA", "RepaConfig", "SRA", "TEACHER_TIMES",
           "apply_label_drop", "combine", "dispersive_loss", "slice_draws", "token_distance", "unwrap"]
