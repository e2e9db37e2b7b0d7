"""One objective = a process + terms + weights, and the registry of terms.

The process (sra.process) draws the training times, corrupts the clean inputs (per sample, or per token with token
groups), and gives the denoising loss; each term (SRA alignment, REPA, dispersive, or one a user registers) reads the
student's tokens after one block and returns a per-sample value under its own name; `combine` is the only place
weights meet.

A term is a class registered with `@register`: `name` (its config section and the key it logs under), `Config` (a
frozen dataclass of `option(...)`s: its flags and config-file keys, declared once, with an `active` property), `unset`
(the config a run starts from, before its preset-dependent defaults are filled), `student_parts` (names of backbone
modules it trains; they are frozen when it is off), `resolve(cfg, preset)` and `validate(cfg, spec)`, and, built per
run, `depth` (the student block it reads), `module` (the parameters it owns, or None: trained, saved and restored
with the run, never exported), `weight(epoch, input_size)` and `__call__(batch) -> (N,)`.

Random draws (label dropout, t, noise, teacher offset; with token groups also the other groups' times and offsets
and the group ids) come from one generator in a fixed order, so that a batch gets the same draws whatever it is split
into (micro-batches, ranks), and resuming reproduces them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..models.dit import TokenTimes
from .dts import MixConfig, draw_extra, group_times

TERMS: dict[str, type] = {}  # name -> term class, in registration order (the order terms are computed and logged)


def register(cls):
    """Class decorator: make a term known to the run spec (its flags, config section, defaults) and the objective."""
    if cls.name in TERMS and TERMS[cls.name] is not cls:
        raise ValueError(f"a term named {cls.name!r} is registered already ({TERMS[cls.name].__qualname__})")
    TERMS[cls.name] = cls
    return cls


@dataclass(frozen=True)
class Preset:
    """What a term's defaults may depend on: the process, the model's number of blocks, the preset's row of the
    defaults table (train/defaults.py), the device."""
    process: object
    depth: int
    row: object
    device: str


@dataclass
class Batch:
    """What the terms see of one step: the student's view of the batch and its tokens per block."""
    student: torch.nn.Module      # the plain backbone (SRA's head)
    teacher: object               # the SRA teacher (EMA or online), or None
    x0: torch.Tensor              # clean inputs (N, C, H, W)
    noise: torch.Tensor           # the step's noise, same shape
    t: torch.Tensor               # group 0's (or the only) time per sample (N,)
    draws: dict                   # all of the step's draws for these samples
    y: torch.Tensor               # labels after dropout (what the student saw)
    y_clean: torch.Tensor         # labels before dropout
    tokens: dict                  # block -> student tokens (N, T, D) after it
    features: torch.Tensor | None  # REPA encoder features stored with the data
    xt: torch.Tensor | None = None      # the student's input (N, C, H, W)
    target: torch.Tensor | None = None  # the process's regression target for it (velocity, epsilon)


class Objective:
    """Callable returning named per-sample terms: the process's ("denoise"[, "vb"]) and one per active term.

    `terms`: term name -> config (resolved), for any registered terms (inactive ones are skipped); `resources`: what
    terms may need to build themselves (REPA: `encoder`, `z_dim`, `hidden_size`). `modules` holds the parameters the
    terms own, by term name."""

    def __init__(self, process, terms: dict | None = None, mix: MixConfig | None = None, patch_size: int = 2,
                 resources: dict | None = None):
        self.process, self.mix, self.patch_size = process, mix or MixConfig(), patch_size
        unknown = [name for name in (terms or {}) if name not in TERMS]
        if unknown:
            raise ValueError(f"unknown term {unknown[0]!r}; registered: {', '.join(TERMS)}")
        self.configs = dict(terms or {})
        self.terms = [TERMS[name](cfg, self, resources or {}) for name, cfg in self.configs.items() if cfg.active]
        self.modules = nn.ModuleDict({t.name: t.module for t in self.terms if t.module is not None})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.process.losses) + tuple(term.name for term in self.terms)

    def term(self, name: str):
        """The active term of that name, or None."""
        return next((t for t in self.terms if t.name == name), None)

    def weights(self, epoch: int = 0, input_size: int = 32) -> dict[str, float]:
        """The weight of every term name at an epoch (the process's losses weigh 1)."""
        return {**{name: 1.0 for name in self.process.losses},
                **{term.name: term.weight(epoch, input_size) for term in self.terms}}

    def prepare(self, model: nn.Module) -> None:
        """Freeze the backbone parts of terms that are off (or do not use them): no gradient, no optimizer state,
        no DDP complaints."""
        active = {t.name: t for t in self.terms}
        for name, cls in TERMS.items():
            for part in cls.student_parts:
                used = name in active and active[name].uses(part)
                getattr(model, part).requires_grad_(used)

    def teacher(self, model, ema):
        """The network the terms read a target from (SRA's EMA or online model), or None when no term needs one."""
        return next((t.teacher(model, ema) for t in self.terms if hasattr(t, "teacher")), None)

    def fp8_teacher_depth(self) -> int | None:
        """Blocks of the teacher a term asks to run in FP8, or None."""
        return next((t.fp8_depth for t in self.terms if getattr(t, "fp8_depth", None)), None)

    def __call__(self, model, teacher, x0: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None,
                 draws: dict | None = None, features: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Terms for clean inputs x0 (N, C, H, W) and labels y (N,). `draws` (from `draw`, possibly a slice of a larger
        batch's) fixes the randomness; otherwise it is drawn here from `generator`. `features` (N, T, D_e): the REPA
        encoder's patch features of x0, when stored with the data."""
        batch, out = self.forward(model, teacher, x0, y, generator, draws, features)
        for term in self.terms:
            out[term.name] = term(batch)
        return out

    def forward(self, model, teacher, x0, y, generator=None, draws=None, features=None) -> tuple[Batch, dict]:
        """The student's forward and the process's losses: (what the terms see, {"denoise": ...[, "vb": ...]})."""
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
        return Batch(student, teacher, x0, noise, t, draws, y, y_clean, tokens, features, xt, target), out

    def draw(self, n: int, sample_shape, device, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """All random draws of one step for n samples, in a fixed order: label-drop uniforms, t, noise, teacher offset
        k (then, with token groups, the draws of `dts.draw_extra`). The offset is drawn whatever the terms (with the
        SRA term's interval and bound, else uniform on [0, 0.2)), so that every option keeps the same random stream."""
        drop = torch.rand(n, generator=generator, device=device)
        t = self.process.draw_time(n, generator, device)
        noise = torch.randn((n, *sample_shape), generator=generator, device=device)
        align = self.configs.get("align")
        interval, t_max = (align.interval, align.t_max) if align is not None else ("uniform", 0.2)
        k = self.process.draw_offset(interval, t_max, t, generator)
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
