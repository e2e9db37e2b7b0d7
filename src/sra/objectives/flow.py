"""SiT + SRA objective: velocity matching on an interpolant path plus the self-alignment term."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..transport.path import PATHS, TIME_SAMPLINGS, interpolate, sample_time
from .align import AlignConfig, alignment, teacher_offset


@dataclass(kw_only=True)
class FlowConfig:
    path: str = "linear"                  # interpolant: linear (1 - t, t) or cosine (cos, sin of pi t / 2)
    time_sampling: str = "uniform"        # training times: uniform or lognormal (EDM sigma = exp(N(0, 1)))

    def validate(self) -> None:
        if self.path not in PATHS:
            raise ValueError(f"unknown path {self.path!r}; choices: {', '.join(PATHS)}")
        if self.time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"unknown time sampling {self.time_sampling!r}; choices: {', '.join(TIME_SAMPLINGS)}")


def unwrap(model):
    """The plain module under DDP / torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or getattr(model, "_orig_mod")
    return model


class FlowObjective:
    """Callable returning named per-sample terms {"denoise": (N,), "align": (N,)}; weights are applied in `combine`.

    Random draws (label dropout, t, noise, teacher offset) come from `generator` in a fixed order, so that a batch
    gets the same draws whatever the batch is split into, and resuming reproduces them.
    """

    def __init__(self, cfg: FlowConfig, align: AlignConfig):
        self.cfg, self.align = cfg, align

    def __call__(self, model, teacher, x0: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None,
                 draws: dict | None = None) -> dict[str, torch.Tensor]:
        """Terms for clean inputs x0 (N, C, H, W) and labels y (N,). `draws` (from `draw`, possibly a slice of a larger
        batch's) fixes the randomness; otherwise it is drawn here from `generator`."""
        cfg, a = self.cfg, self.align
        if draws is None:
            draws = self.draw(x0.shape[0], x0.shape[1:], x0.device, generator)
        t, noise = draws["t"], draws["noise"].to(x0.dtype)
        y = apply_label_drop(unwrap(model), y, draws["drop"])
        xt, target = interpolate(cfg.path, x0, noise, t)
        if not a.active:  # lambda = 0: exactly plain SiT, no teacher forward at all
            return {"denoise": ((model(xt, t, y).float() - target) ** 2).flatten(1).mean(1)}
        pred, h = model(xt, t, y, feature_depth=a.block_out_s)
        t_teacher = (t - draws["k"]).clamp(0.0, 1.0)
        xt_teacher, _ = interpolate(cfg.path, x0, noise, t_teacher)  # same x0, same noise, same (dropped) labels
        return {"denoise": ((pred.float() - target) ** 2).flatten(1).mean(1),
                "align": alignment(a, unwrap(model), teacher, h, xt_teacher, t_teacher, y)}

    def draw(self, n: int, sample_shape, device, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """All random draws of one step for n samples, in a fixed order: label-drop uniforms, t, noise, offset k."""
        drop = torch.rand(n, generator=generator, device=device)
        t = sample_time(self.cfg.time_sampling, self.cfg.path, n, generator=generator, device=device)
        noise = torch.randn((n, *sample_shape), generator=generator, device=device)
        k = teacher_offset(self.align, t, generator)
        return {"drop": drop, "t": t, "noise": noise, "k": k}


def apply_label_drop(model, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Null label where u < class_dropout_prob (u uniform per sample); the teacher sees the same dropped labels."""
    emb = model.y_embedder
    if emb.dropout_prob <= 0:
        return y
    return torch.where(u < emb.dropout_prob, torch.full_like(y, emb.num_classes), y)


def slice_draws(draws: dict[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    return {k: v[start:stop] for k, v in draws.items()}
