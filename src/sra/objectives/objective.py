"""One objective = a process + terms + weights.

The process (sra.process) draws the training times, corrupts the clean inputs (per sample, or per token with token
groups), and gives the denoising loss; each term (SRA alignment, REPA, dispersive) reads the student's tokens after
one block and returns a per-sample value under its own name; `combine` is the only place weights meet.

Random draws (label dropout, t, noise, teacher offset; with token groups also the other groups' times and offsets
and the group ids) come from one generator in a fixed order, so that a batch gets the same draws whatever it is split
into (micro-batches, ranks), and resuming reproduces them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.dit import TokenTimes
from ..options import option
from ..process.flow_path import PATHS, TIME_SAMPLINGS
from .align import SRA, AlignConfig
from .dispersive import Dispersive, DispConfig
from .dts import MixConfig, draw_extra, group_times
from .repa import REPA, RepaConfig


@dataclass(kw_only=True)
class FlowConfig:
    path: str = option("linear", flag="--path-type", choices=PATHS,
                       help="SiT interpolant: linear (alpha, sigma = 1 - t, t) or cosine (cos, sin of pi t / 2)")
    time_sampling: str = option("uniform", flag="--weighting", choices=TIME_SAMPLINGS,
                                help="SiT training-time distribution: uniform, or lognormal (EDM sigma = exp(N(0, 1)))")

    def validate(self) -> None:
        if self.path not in PATHS:
            raise ValueError(f"unknown path {self.path!r}; choices: {', '.join(PATHS)}")
        if self.time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"unknown time sampling {self.time_sampling!r}; choices: {', '.join(TIME_SAMPLINGS)}")


@dataclass
class Batch:
    """What the terms see of one step: the student's view of the batch and its tokens per block."""
    student: torch.nn.Module      # the plain module (heads, projectors)
    teacher: object               # the SRA teacher (EMA or online), or None
    x0: torch.Tensor              # clean inputs (N, C, H, W)
    noise: torch.Tensor           # the step's noise, same shape
    t: torch.Tensor               # group 0's (or the only) time per sample (N,)
    draws: dict                   # all of the step's draws for these samples
    y: torch.Tensor               # labels after dropout (what the student saw)
    y_clean: torch.Tensor         # labels before dropout
    tokens: dict                  # block -> student tokens (N, T, D) after it
    features: torch.Tensor | None  # REPA encoder features stored with the data


class Objective:
    """Callable returning named per-sample terms: the process's ("denoise"[, "vb"]) and one per active term."""

    def __init__(self, process, align: AlignConfig, mix: MixConfig | None = None, patch_size: int = 2,
                 repa: RepaConfig | None = None, encoder=None, disp: DispConfig | None = None):
        self.process, self.align, self.mix, self.patch_size = process, align, mix or MixConfig(), patch_size
        terms = (SRA(align, process, self.mix, patch_size), REPA(repa or RepaConfig(), encoder),
                 Dispersive(disp or DispConfig()))
        self.terms = [term for term in terms if term.active]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.process.losses) + tuple(term.name for term in self.terms)

    def weights(self, epoch: int = 0, input_size: int = 32) -> dict[str, float]:
        """The weight of every term name at an epoch (the process's losses weigh 1)."""
        return {**{name: 1.0 for name in self.process.losses},
                **{term.name: term.weight(epoch, input_size) for term in self.terms}}

    def __call__(self, model, teacher, x0: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None,
                 draws: dict | None = None, features: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Terms for clean inputs x0 (N, C, H, W) and labels y (N,). `draws` (from `draw`, possibly a slice of a larger
        batch's) fixes the randomness; otherwise it is drawn here from `generator`. `features` (N, T, D_e): the REPA
        encoder's patch features of x0, when stored with the data."""
        process, mix = self.process, self.mix
        if draws is None:
            draws = self.draw(x0.shape[0], x0.shape[1:], x0.device, generator)
        t, noise = draws["t"], draws["noise"].to(x0.dtype)
        student = unwrap(model)
        y_clean, y = y, apply_label_drop(student, y, draws["drop"])
        kw = {}
        if mix.active:  # token groups: each patch at its group's time (objectives.dts)
            t_model = TokenTimes(group_times(mix, t, draws), draws["groups"])  # (N, G) times, adaLN once per group
            t_input = t_model.per_token()
            if mix.attention_separation:
                kw["groups"] = draws["groups"]
        else:
            t_model = t_input = t
        xt, target = process.corrupt(x0, noise, t_input, self.patch_size)
        depths = sorted({term.depth for term in self.terms})
        if not depths:  # no term reads tokens: exactly the plain model, no teacher forward at all
            pred, tokens = model(xt, t_model, y, **kw), {}
        else:
            pred, h = model(xt, t_model, y, feature_depth=depths[0] if len(depths) == 1 else tuple(depths), **kw)
            tokens = dict(zip(depths, (h,) if len(depths) == 1 else h))
        out = process.loss(pred, target, x0, xt, t_input, self.patch_size)
        batch = Batch(student, teacher, x0, noise, t, draws, y, y_clean, tokens, features)
        for term in self.terms:
            out[term.name] = term(batch)
        return out

    def draw(self, n: int, sample_shape, device, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """All random draws of one step for n samples, in a fixed order: label-drop uniforms, t, noise, teacher offset
        k (then, with token groups, the draws of `dts.draw_extra`)."""
        drop = torch.rand(n, generator=generator, device=device)
        t = self.process.draw_time(n, generator, device)
        noise = torch.randn((n, *sample_shape), generator=generator, device=device)
        k = self.process.draw_offset(self.align.interval, self.align.t_max, t, generator)
        draws = {"drop": drop, "t": t, "noise": noise, "k": k}
        if self.mix.active:
            tokens = (sample_shape[-1] // self.patch_size) ** 2
            draws.update(draw_extra(self.mix, self.process, n, tokens, generator, device))
        return draws


def combine(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """L = sum over terms of weight x batch mean, in the terms' order (the process's losses first)."""
    parts = [weights[name] * value.mean() for name, value in terms.items()]  # x 1.0 is exact: plain means
    return sum(parts[1:], parts[0])


def unwrap(model):
    """The plain module under DDP / torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or getattr(model, "_orig_mod")
    return model


def apply_label_drop(model, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Null label where u < class_dropout_prob (u uniform per sample)."""
    emb = model.y_embedder
    if emb.dropout_prob <= 0:
        return y
    return torch.where(u < emb.dropout_prob, torch.full_like(y, emb.num_classes), y)


def slice_draws(draws: dict[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    return {k: v[start:stop] for k, v in draws.items()}
