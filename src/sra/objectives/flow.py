"""SiT + SRA objective: velocity matching on an interpolant path plus the self-alignment term."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..models.dit import TokenTimes
from ..models.encoders import encode
from ..transport.path import PATHS, TIME_SAMPLINGS, interpolate, sample_time
from ..options import option
from .align import AlignConfig, alignment, offset_from_uniform, teacher_offset
from .dts import MixConfig, draw_extra, group_times, mixed_interpolant, teacher_view
from .repa import RepaConfig, repa_alignment


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


def unwrap(model):
    """The plain module under DDP / torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or getattr(model, "_orig_mod")
    return model


class FlowObjective:
    """Callable returning named per-sample terms {"denoise": (N,), "align": (N,), "repa": (N,)} (the last two when
    on); weights are applied in `combine`.

    Random draws (label dropout, t, noise, teacher offset; with token groups also the other groups' times and offsets
    and the group ids) come from `generator` in a fixed order, so that a batch gets the same draws whatever the batch
    is split into, and resuming reproduces them. `mix` adds token groups (objectives.dts); `patch_size` is the
    model's, which fixes the token grid; `repa` adds REPA, whose encoder features come with the batch (stored by
    `sra prepare --encoder`) or from `encoder` run on the clean inputs.
    """

    def __init__(self, cfg: FlowConfig, align: AlignConfig, mix: MixConfig | None = None, patch_size: int = 2,
                 repa: RepaConfig | None = None, encoder=None):
        self.cfg, self.align, self.mix, self.patch_size = cfg, align, mix or MixConfig(), patch_size
        self.repa, self.encoder = repa or RepaConfig(), encoder

    def __call__(self, model, teacher, x0: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None,
                 draws: dict | None = None, features: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Terms for clean inputs x0 (N, C, H, W) and labels y (N,). `draws` (from `draw`, possibly a slice of a larger
        batch's) fixes the randomness; otherwise it is drawn here from `generator`. `features` (N, T, D_e): the REPA
        encoder's patch features of x0, when stored with the data."""
        cfg, a, r, mix = self.cfg, self.align, self.repa, self.mix
        if draws is None:
            draws = self.draw(x0.shape[0], x0.shape[1:], x0.device, generator)
        t, noise = draws["t"], draws["noise"].to(x0.dtype)
        # The teacher's labels follow each reference: plain SRA's teacher sees the student's dropped labels (SiT-SRA
        # loss.py `labels_teacher = labels_train`); with token groups, the authors' SiT-SRA_DTS_AS drops labels inside
        # the student's forward only and hands its eval-mode teacher the labels as they came (`y=labels`).
        y_clean, y = y, apply_label_drop(unwrap(model), y, draws["drop"])
        kw = {}
        if mix.active:  # token groups: each patch at its group's time, target mixed alike (objectives.dts)
            t_model = TokenTimes(group_times(mix, t, draws), draws["groups"])  # (N, G) times, adaLN once per group
            xt, target = mixed_interpolant(cfg.path, x0, noise, t_model.per_token(), self.patch_size)
            if mix.attention_separation:
                kw["groups"] = draws["groups"]
        else:
            t_model = t
            xt, target = interpolate(cfg.path, x0, noise, t)
        depth = a.block_out_s if a.active else (r.block if r.active else None)
        if depth is None:  # lambda = 0, no REPA: exactly plain SiT, no teacher forward at all
            return {"denoise": ((model(xt, t_model, y, **kw).float() - target) ** 2).flatten(1).mean(1)}
        pred, h = model(xt, t_model, y, feature_depth=depth, **kw)
        terms = {"denoise": ((pred.float() - target) ** 2).flatten(1).mean(1)}
        if a.active:
            x_teacher, t_teacher, g_teacher = self.teacher_input(x0, noise, t, draws)
            y_teacher = y_clean if mix.active else y
            terms["align"] = alignment(a, unwrap(model), teacher, h, x_teacher, t_teacher, y_teacher, groups=g_teacher)
        if r.active:
            if features is None:
                features = encode(self.encoder, x0, x0.shape[-1] // self.patch_size)
            terms["repa"] = repa_alignment(unwrap(model), h, features)
        return terms

    def teacher_input(self, x0, noise, t, draws):
        """(input, time (N,) or (N, T), group ids for attention or None) of the SRA teacher: same x0 and noise as the
        student."""
        cfg, mix = self.cfg, self.mix
        if not mix.active:  # SRA's t - k, or t itself for the self_flow / same teacher times
            t_teacher = (t - draws["k"]).clamp(0.0, 1.0) if mix.teacher_t == "sra" else t
            return interpolate(cfg.path, x0, noise, t_teacher)[0], t_teacher, None
        k = torch.cat([draws["k"][:, None], offset_from_uniform(self.align, draws["u_more"].to(t.dtype))], dim=1)
        t_input, t_embed, groups = teacher_view(mix, k, group_times(mix, t, draws), draws["groups"])
        x_teacher = mixed_interpolant(cfg.path, x0, noise, t_input, self.patch_size)[0]
        return x_teacher, t_embed, groups if mix.attention_separation else None

    def draw(self, n: int, sample_shape, device, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
        """All random draws of one step for n samples, in a fixed order: label-drop uniforms, t, noise, offset k (then,
        with token groups, the draws of `dts.draw_extra`)."""
        drop = torch.rand(n, generator=generator, device=device)
        t = sample_time(self.cfg.time_sampling, self.cfg.path, n, generator=generator, device=device)
        noise = torch.randn((n, *sample_shape), generator=generator, device=device)
        k = teacher_offset(self.align, t, generator)
        draws = {"drop": drop, "t": t, "noise": noise, "k": k}
        if self.mix.active:
            tokens = (sample_shape[-1] // self.patch_size) ** 2
            draws.update(draw_extra(self.mix, self.cfg.time_sampling, self.cfg.path, n, tokens, generator, device))
        return draws


def apply_label_drop(model, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Null label where u < class_dropout_prob (u uniform per sample)."""
    emb = model.y_embedder
    if emb.dropout_prob <= 0:
        return y
    return torch.where(u < emb.dropout_prob, torch.full_like(y, emb.num_classes), y)


def slice_draws(draws: dict[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    return {k: v[start:stop] for k, v in draws.items()}
