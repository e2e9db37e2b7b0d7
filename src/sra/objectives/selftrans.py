"""Self-Transcendence (Sun et al., arXiv 2601.07773; code csslc/Self-Transcendence @42fde5d), two terms for its two
stages, on any process:

Stage 1, "st_head" (their `vae_diffloss`, train_vaeloss.py): a head on a shallow block's tokens predicts the
process's regression target (SiT: the velocity) from them,
    L_head = mean over pixels of (head(h_s) - target)^2,   counted only for samples whose time lies in [a, b].
The head is their `projectors` MLP (D -> P -> P -> D, SiLU) and `projectors_final` (LayerNorm without affine, then
Linear(D, p^2 C)), unpatchified to the input's shape.

Stage 2, "selftrans" (their `selftrans_Loss`, train_selftrans.py): a frozen stage-1 model is the teacher. Its tokens
after block m are computed on the student's own noisy input and time, with the clean labels and with the null label,
and guided, g = g_uncond + w (g_cond - g_uncond); an MLP projection of the student's block-s tokens regresses them,
    L_st = mean over tokens and features of (proj(h_s) - g)^2,   counted only for times in [a, b].
A new model trains from scratch in stage 2; the teacher is loaded once, never trained and never saved with the
student (its weights stay in the stage-1 run).

Where ours differs from the released code (documented choices):
- the time range masks each sample (the intent of their `t_mask`, "shape: [B,]"). Their mask is (B, 1, 1, 1) and
  multiplies a (B,) loss, which broadcasts to (B, 1, 1, B): its mean is mean(loss) x (share of the batch in range),
  every sample's loss weighted by the batch's share instead of its own mask. The two agree when the whole batch is in
  range (tests/test_selftrans.py checks both against their function written out).
- their stage-2 `--stop-epoch` (a step count, 100000 by default, after which the weight is 0) is not implemented.
- their teacher null label is 1000 (ImageNet); ours is the teacher's own null row (`num_classes`).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn

from ..models.loading import load_model, resolve_checkpoint
from ..options import option
from .objective import register

SOURCE = "csslc/Self-Transcendence @42fde5d"


def mlp(hidden: int, width: int, out: int) -> nn.Sequential:
    """Their `build_mlp`: Linear(D, P) -> SiLU -> Linear(P, P) -> SiLU -> Linear(P, out), xavier-initialised with
    zero biases (their `_basic_init`)."""
    net = nn.Sequential(nn.Linear(hidden, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                        nn.Linear(width, out))
    for m in net:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return net


def in_range(unit_t: torch.Tensor, t_range: tuple[float, float]) -> torch.Tensor:
    """1.0 where a <= t <= b (times on the [0, 1] scale, 0 = data), else 0.0 (N,)."""
    a, b = t_range
    return ((unit_t >= a) & (unit_t <= b)).float()


def check_range(flag: str, t_range: tuple[float, float]) -> None:
    a, b = t_range
    if not (math.isfinite(a) and math.isfinite(b) and 0.0 <= a <= b <= 1.0):
        raise ValueError(f"{flag} {a:g} {b:g} must satisfy 0 <= low <= high <= 1")


# ----------------------------------------------------------------------------------------------------------------
# Stage 1: a head on a shallow block predicts the denoising target
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class HeadConfig:
    weight: float = option(0.0, flag="--st-head-weight",
                           group="Self-Transcendence stage 1: a shallow block's tokens predict the target",
                           help="weight of the head's loss; 0: off (train_vaeloss.py --proj-coeff default 0.5, "
                                "train_vaeloss.sh passes 0.5)")
    block: int = option(0, flag="--st-head-block",
                        help="block whose tokens the head reads (1-indexed; 0: a sixth of the blocks, at least 1: "
                             "train_vaeloss.sh --encoder-depth 2 of SiT-B's 12)")
    t_range: tuple[float, float] = option((0.4, 0.7), flag="--st-head-t-range", metavar="T",
                                          help="times (0 = data, 1 = noise) whose samples count (train_vaeloss.sh "
                                               "--t-range 0.4 0.7)")
    projector_dim: int = option(2048, flag="--st-head-projector-dim",
                                help="hidden width of the head's MLP (sit_vaeloss_model.py projector_dim=2048)")

    @property
    def active(self) -> bool:
        return self.weight > 0


class TargetHead(nn.Module):
    """Tokens (N, T, D) -> the target's shape (N, C, H, W): their `projectors` then `projectors_final`."""

    def __init__(self, hidden: int, width: int, patch: int, channels: int):
        super().__init__()
        self.patch, self.channels = patch, channels
        self.mlp = mlp(hidden, width, hidden)
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, patch * patch * channels)
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.linear(self.norm(self.mlp(h)))  # (N, T, p^2 C)
        n, t, _ = x.shape
        side, p, c = int(round(t ** 0.5)), self.patch, self.channels
        x = x.reshape(n, side, side, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(n, c, side * p, side * p)


@register
class TargetHeadTerm:
    """The stage-1 term "st_head" (N,)."""

    name, title = "st_head", "Self-Transcendence stage 1"
    Config = HeadConfig
    unset = HeadConfig()
    student_parts = ()
    bench = dict(weight=0.5)  # `sra bench --methods st_head`
    defaults_from = {
        "weight": f"0 (off); {SOURCE} train_vaeloss.py --proj-coeff default 0.5, train_vaeloss.sh passes 0.5",
        "block": f"0 = a sixth of the blocks; {SOURCE} train_vaeloss.sh --encoder-depth 2 for SiT-B (12 blocks); "
                 "train_vaeloss.py's default 8",
        "t_range": f"{SOURCE} train_vaeloss.sh --t-range 0.4 0.7 (train_vaeloss.py default None: all times); "
                   "loss.py vae_diffloss masks by it",
        "projector_dim": f"{SOURCE} models/sit_vaeloss_model.py SiT(projector_dim=2048), build_mlp",
    }

    @staticmethod
    def resolve(cfg: HeadConfig, preset) -> HeadConfig:
        return dataclasses.replace(cfg, block=cfg.block or max(1, round(preset.depth / 6))) if cfg.active else cfg

    @staticmethod
    def validate(cfg: HeadConfig, spec) -> None:
        if not (math.isfinite(cfg.weight) and cfg.weight >= 0):
            raise ValueError(f"--st-head-weight must be a finite number >= 0 (got {cfg.weight})")
        check_range("--st-head-t-range", cfg.t_range)
        if cfg.active and not 1 <= cfg.block <= spec.model_depth:
            raise ValueError(f"--st-head-block {cfg.block} outside the model's 1..{spec.model_depth} blocks")
        if cfg.projector_dim < 1:
            raise ValueError(f"--st-head-projector-dim must be >= 1 (got {cfg.projector_dim})")

    def __init__(self, cfg: HeadConfig, objective, resources: dict):
        self.cfg, self.process, self.depth = cfg, objective.process, cfg.block
        self.module = TargetHead(resources["hidden_size"], cfg.projector_dim, objective.patch_size,
                                 resources["in_channels"])

    def weight(self, epoch: int, input_size: int) -> float:
        return self.cfg.weight

    def __call__(self, b) -> torch.Tensor:
        pred = self.module(b.tokens[self.depth]).float()
        target = b.target[:, :pred.shape[1]].float()
        loss = ((pred - target) ** 2).flatten(1).mean(1)
        return loss * in_range(self.process.unit_time(b.t), self.cfg.t_range)


# ----------------------------------------------------------------------------------------------------------------
# Stage 2: a frozen stage-1 teacher's guided tokens
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class SelfTransConfig:
    weight: float = option(0.0, flag="--selftrans-weight",
                           group="Self-Transcendence stage 2: regress a frozen stage-1 teacher's guided tokens",
                           help="weight of the term; 0: off (train_selftrans.py --proj-coeff default 0.5)")
    teacher: str | None = option(None, flag="--selftrans-teacher", metavar="RUN",
                                 help="the stage-1 run folder or one of its checkpoints (same model and data)")
    teacher_weights: str = option("model", choices=("model", "ema"), flag="--selftrans-teacher-weights",
                                  help="which weights of the teacher's checkpoint (train_selftrans.py loads "
                                       "ckpt['model'], the online ones)")
    block: int = option(0, flag="--selftrans-block",
                        help="student block whose tokens are projected (their --stu-depth; 0: half the blocks: "
                             "train_selftrans.sh --stu-depth 6 of SiT-B's 12)")
    teacher_block: int = option(0, flag="--selftrans-teacher-block",
                                help="teacher block whose tokens are the target (their --tea-depth; 0: two thirds "
                                     "of the blocks: train_selftrans.sh --tea-depth 8 of 12)")
    cfg_scale: float = option(30.0, flag="--selftrans-cfg",
                              help="guidance scale w of the teacher's tokens, uncond + w (cond - uncond) "
                                   "(train_selftrans.sh --cfg_guide 30; train_selftrans.py's default is 5)")
    t_range: tuple[float, float] = option((0.4, 0.7), flag="--selftrans-t-range", metavar="T",
                                          help="times (0 = data, 1 = noise) whose samples count (train_selftrans.sh "
                                               "--t-range 0.4 0.7)")
    projector_dim: int = option(2048, flag="--selftrans-projector-dim",
                                help="hidden width of the student's projection MLP (sit_selftrans_model.py "
                                     "projector_dim=2048)")

    @property
    def active(self) -> bool:
        return self.weight > 0


TEACHER_MUST_MATCH = ("model", "depth", "input_size", "in_channels", "num_classes", "process")


def teacher_record(path: str) -> tuple[Path, dict]:
    """(checkpoint file, run spec) of a stage-1 teacher, read without loading its weights; one-line errors."""
    try:
        file = resolve_checkpoint(path)
    except Exception as e:  # noqa: BLE001 -- CheckpointError or an OS error: one line
        raise ValueError(f"--selftrans-teacher {path}: {e}") from None
    for spec_file in (file.parent.parent / "config.json", file.parent / "config.json"):
        if spec_file.is_file():
            try:
                spec = json.loads(spec_file.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            spec = spec.get("train_config", spec) if spec.get("format") == "sra" else spec
            if isinstance(spec, dict) and "model" in spec:
                return file, spec
    raise ValueError(f"--selftrans-teacher {path}: no run spec (config.json) beside {file}; the teacher must be an "
                     "`sra train` run (stage 1), whose spec names its model and data")


@register
class SelfTranscendence:
    """The stage-2 term "selftrans" (N,)."""

    name, title = "selftrans", "Self-Transcendence stage 2"
    Config = SelfTransConfig
    unset = SelfTransConfig()
    student_parts = ()
    defaults_from = {
        "weight": f"0 (off); {SOURCE} train_selftrans.py --proj-coeff default 0.5",
        "block": f"0 = half the blocks; {SOURCE} train_selftrans.sh --stu-depth 6 for SiT-B (12 blocks); "
                 "train_selftrans.py's default 8",
        "teacher_block": f"0 = two thirds of the blocks; {SOURCE} train_selftrans.sh --tea-depth 8 for SiT-B; "
                         "train_selftrans.py's default 2",
        "cfg_scale": f"{SOURCE} train_selftrans.sh --cfg_guide 30.0 (train_selftrans.py default 5.0); loss.py "
                     "selftrans_Loss: fea_uncond + cfg_scale * (fea_cond - fea_uncond)",
        "t_range": f"{SOURCE} train_selftrans.sh --t-range 0.4 0.7 (train_selftrans.py default None)",
        "teacher_weights": f"{SOURCE} train_selftrans.py: guided_model.load_state_dict(ckpt['model'], strict=False)",
        "projector_dim": f"{SOURCE} models/sit_selftrans_model.py SiT(projector_dim=2048), build_mlp(D, 2048, D)",
    }

    @staticmethod
    def resolve(cfg: SelfTransConfig, preset) -> SelfTransConfig:
        if not cfg.active:
            return cfg
        return dataclasses.replace(cfg, block=cfg.block or max(1, preset.depth // 2),
                                   teacher_block=cfg.teacher_block or max(1, round(2 * preset.depth / 3)))

    @staticmethod
    def validate(cfg: SelfTransConfig, spec) -> None:
        if not (math.isfinite(cfg.weight) and cfg.weight >= 0):
            raise ValueError(f"--selftrans-weight must be a finite number >= 0 (got {cfg.weight})")
        check_range("--selftrans-t-range", cfg.t_range)
        if not cfg.active:
            return
        if not cfg.teacher:
            raise ValueError("Self-Transcendence's stage 2 needs its stage-1 teacher: --selftrans-teacher RUN")
        if spec.mix.active:
            raise ValueError("Self-Transcendence with token groups (--mask-ratio) is not defined: the teacher sees the "
                             "student's input at one time per sample")
        for flag, block in (("--selftrans-block", cfg.block), ("--selftrans-teacher-block", cfg.teacher_block)):
            if not 1 <= block <= spec.model_depth:
                raise ValueError(f"{flag} {block} outside the model's 1..{spec.model_depth} blocks")
        if cfg.projector_dim < 1:
            raise ValueError(f"--selftrans-projector-dim must be >= 1 (got {cfg.projector_dim})")
        _, record = teacher_record(cfg.teacher)
        mine = spec.to_dict()
        record = {**record, "depth": record.get("depth")}
        for key in TEACHER_MUST_MATCH:
            theirs = record.get(key)
            if key == "process" and theirs is None:
                continue  # a stage-1 spec from before the process section: its model names the process
            if theirs != mine[key]:
                raise ValueError(f"--selftrans-teacher {cfg.teacher} was trained with {key} {theirs!r}, this run has "
                                 f"{mine[key]!r}: the teacher must be the same model on the same data")
        if record.get("data_dir") != mine["data_dir"]:
            raise ValueError(f"--selftrans-teacher {cfg.teacher} was trained on {record.get('data_dir')!r}, this run "
                             f"on {mine['data_dir']!r}: the teacher must be the same model on the same data")

    def __init__(self, cfg: SelfTransConfig, objective, resources: dict):
        self.cfg, self.process, self.depth = cfg, objective.process, cfg.block
        hidden = resources["hidden_size"]
        self.module = mlp(hidden, cfg.projector_dim, hidden)
        # loaded once, frozen, kept out of `module`: never trained, never in the student's checkpoints
        self.guide = load_model(cfg.teacher, weights=cfg.teacher_weights,
                                device=resources.get("device", "cpu")).model.requires_grad_(False).eval()

    def weight(self, epoch: int, input_size: int) -> float:
        return self.cfg.weight

    @torch.no_grad()
    def guided_tokens(self, xt: torch.Tensor, t, y: torch.Tensor) -> torch.Tensor:
        """The teacher's tokens after block m, guided with the null label: uncond + w (cond - uncond) (N, T, D)."""
        n = xt.shape[0]
        null = torch.full_like(y, self.guide.num_classes)
        g = self.guide.forward_features(torch.cat([xt, xt]), torch.cat([t, t]), torch.cat([y, null]),
                                        depth=self.cfg.teacher_block).float()
        cond, uncond = g[:n], g[n:]
        return uncond + self.cfg.cfg_scale * (cond - uncond)

    def __call__(self, b) -> torch.Tensor:
        target = self.guided_tokens(b.xt, b.t, b.y_clean)
        pred = self.module(b.tokens[self.depth]).float()
        loss = ((pred - target) ** 2).flatten(1).mean(1)
        return loss * in_range(self.process.unit_time(b.t), self.cfg.t_range)
