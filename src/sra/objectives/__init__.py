"""Losses. Each objective returns named per-sample terms; `combine` is the only place weights are applied."""
from __future__ import annotations

import torch

from .align import AlignConfig, DISTANCES, token_distance
from .dts import MixConfig, TEACHER_TIMES
from .repa import RepaConfig
from .flow import FlowConfig, FlowObjective, apply_label_drop, slice_draws, unwrap


def combine(terms: dict[str, torch.Tensor], align_weight: float, repa_weight: float = 0.0) -> torch.Tensor:
    """L = mean(denoise) [+ mean(vb)] + lambda * mean(align) [+ lambda_repa * mean(repa)]."""
    loss = terms["denoise"].mean()
    if "vb" in terms:
        loss = loss + terms["vb"].mean()
    if "align" in terms:
        loss = loss + align_weight * terms["align"].mean()
    if "repa" in terms:
        loss = loss + repa_weight * terms["repa"].mean()
    return loss


__all__ = ["AlignConfig", "DISTANCES", "FlowConfig", "FlowObjective", "MixConfig", "RepaConfig", "TEACHER_TIMES", "apply_label_drop", "slice_draws", "combine", "token_distance", "unwrap"]
