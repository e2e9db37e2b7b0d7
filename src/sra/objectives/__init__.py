"""Losses. Each objective returns named per-sample terms; `combine` is the only place weights are applied."""
from __future__ import annotations

import torch

from .align import AlignConfig, DISTANCES, token_distance
from .dts import MixConfig, TEACHER_TIMES
from .flow import FlowConfig, FlowObjective, apply_label_drop, slice_draws, unwrap


def combine(terms: dict[str, torch.Tensor], align_weight: float) -> torch.Tensor:
    """L = mean(denoise) [+ mean(vb)] + lambda * mean(align)."""
    loss = terms["denoise"].mean()
    if "vb" in terms:
        loss = loss + terms["vb"].mean()
    if "align" in terms:
        loss = loss + align_weight * terms["align"].mean()
    return loss


__all__ = ["AlignConfig", "DISTANCES", "FlowConfig", "FlowObjective", "MixConfig", "TEACHER_TIMES", "apply_label_drop", "slice_draws", "combine", "token_distance", "unwrap"]
