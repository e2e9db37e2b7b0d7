"""The SRA alignment term (arXiv 2505.02831, Sec. 3): student tokens after block s, seen at time t and passed through
the projection head, regress the EMA teacher's tokens after block m >= s, seen at the less noisy t' <= t."""
from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..options import option
from .dts import group_times, teacher_view
from .objective import register

DISTANCES = ("cos", "cos-over-tokens", "sml1", "l1", "l2")
COSINES = ("cos", "cos-over-tokens")  # the distances whose lambda is 0.5 and that take no epoch decay
INTERVALS = ("uniform", "fixed", "none")
TEACHERS = ("ema", "online")


@dataclass(frozen=True, kw_only=True)
class AlignConfig:
    weight: float | None = option(0.5, flag="--sra-weight", group="SRA: self-representation alignment",
                                  help="alignment weight lambda; 0 = plain training, no teacher forward (unset: 0.5 "
                                       "with either cosine; else 0.2 for SiT, 0.04 for DiT, as the released code)")
    distance: str | None = option("cos", flag="--loss-type", choices=DISTANCES,
                                  help="alignment distance: cos (1 - cosine over each token's features), "
                                       "cos-over-tokens (1 - cosine over the token axis per feature, as the released "
                                       "SiT-SRA code computes its cos), sml1 (smooth-L1, beta 0.05), l1, l2 (unset: "
                                       "cos for SiT, sml1 for DiT)")
    block_out_s: int = option(3, help="student tokens after this many blocks (1-indexed; 0: the paper's per-size default)")
    block_out_t: int = option(8, help="teacher tokens after this many blocks, >= the student's (1-indexed; 0: the "
                                      "paper's per-size default)")
    t_max: float = option(0.2, help="teacher time offset bound, in units of t: t' = clamp(t - k, 0, 1), k ~ U(0, t_max)")
    interval: str = option("uniform", flag="--t-interval", choices=INTERVALS,
                           help="offset k: uniform U(0, t_max), fixed t_max, or none (k = 0; ablations)")
    use_head: bool = option(True, flag="--head", help="pass the student tokens through the projection head "
                                                      "(--no-head: align raw tokens, an ablation)")
    teacher: str = option("ema", choices=TEACHERS, help="teacher network: the EMA (paper) or the online model (no grad)")
    teacher_bf16: bool | None = option(True, help="run the teacher under bf16 autocast, its tokens are only a target "
                                                  "(unset: on where bf16 is native: CUDA, AVX512-BF16/AMX CPUs)")
    teacher_fp8: bool = option(False, help="run the teacher's block linears in FP8 (e4m3, row-wise scales, weights cast "
                                           "once per EMA update; Hopper/Ada GPUs only, refused elsewhere)")
    legacy_epoch_decay: bool | None = option(False, help="the released code's decay of lambda: x0.1 per 1000 epochs "
                                                         "after epoch 149 at 256 px (inputs up to 32), per 800 after "
                                                         "epoch 99 at 512 px (unset: on except with a cosine)")

    @property
    def active(self) -> bool:
        return self.weight > 0

    def validate(self, depth: int) -> None:
        """A resolved config against a model of `depth` blocks."""
        if self.distance not in DISTANCES:
            raise ValueError(f"unknown alignment distance {self.distance!r}; choices: {', '.join(DISTANCES)}")
        if self.interval not in INTERVALS:
            raise ValueError(f"unknown time interval {self.interval!r}; choices: {', '.join(INTERVALS)}")
        if self.teacher not in TEACHERS:
            raise ValueError(f"unknown teacher {self.teacher!r}; choices: {', '.join(TEACHERS)}")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"alignment weight must be a finite number >= 0 (got {self.weight})")
        if not self.active:
            return
        if not 1 <= self.block_out_s <= depth or not 1 <= self.block_out_t <= depth:
            raise ValueError(f"block indices {self.block_out_s}->{self.block_out_t} outside the model's 1..{depth} blocks")
        if self.block_out_s > self.block_out_t:
            raise ValueError(f"student block {self.block_out_s} comes after teacher block {self.block_out_t}")
        if not 0.0 <= self.t_max <= 1.0:
            raise ValueError(f"t_max must be in [0, 1] (got {self.t_max})")

    def effective_weight(self, epoch: int = 0, input_size: int = 32) -> float:
        """lambda, or with legacy_epoch_decay the released code's schedule lambda * 0.1 ** ((epoch - E) / D) after
        epoch E (0-based epochs), with (E, D) from the resolution as the released SiT-SRA and DiT-SRA train.py pick
        them: (149, 1000) at 256 px, (99, 800) at 512 px (see `legacy_decay_constants`)."""
        start, span = legacy_decay_constants(input_size)
        if not self.legacy_epoch_decay or epoch <= start:
            return self.weight
        return self.weight * 0.1 ** ((epoch - start) / span)


def legacy_decay_constants(input_size: int) -> tuple[int, int]:
    """(first epoch of the decay, epochs per factor 10) of the released schedule, from the model's input side: up to
    32 (256 px through the SD-VAE, and every smaller input) the 256-px constants, above (64 = 512 px) the 512-px ones
    (the released code: `if resolution == 256 ... else ...`)."""
    return (149, 1000) if input_size <= 32 else (99, 800)


def token_distance(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-sample distance (N,) between token sets (N, T, D): mean over tokens (and features for the L-norms).
    cos: 1 - cosine similarity over the feature dimension of each token, (N, T), then the mean over tokens.
    cos-over-tokens: 1 - cosine similarity over the token axis, (N, D), then the mean over features: what the released
    SiT-SRA and SiT-SRA_DTS_AS `Simpleloss` compute for "cos" (`F.cosine_similarity(a, b)` on (N, T, D) takes its
    default dim=1). The batch mean of either equals the released `.mean()`, since every sample has as many terms."""
    pred, target = pred.float(), target.float()
    if kind == "cos":
        d = 1 - F.cosine_similarity(pred, target, dim=-1, eps=1e-8)  # (N, T)
    elif kind == "cos-over-tokens":
        d = 1 - F.cosine_similarity(pred, target, dim=1, eps=1e-8)  # (N, D)
    elif kind == "sml1":
        d = F.smooth_l1_loss(pred, target, beta=0.05, reduction="none")
    elif kind == "l1":
        d = (pred - target).abs()
    elif kind == "l2":
        d = (pred - target) ** 2
    else:
        raise ValueError(f"unknown alignment distance {kind!r}")
    return d.flatten(1).mean(1)


def fast_bf16(device: torch.device | str) -> bool:
    """Whether bf16 matmuls are native here: CUDA, or a CPU with AVX512-BF16 or AMX. Elsewhere (e.g. AVX2 CPUs) bf16
    autocast is emulated and several times slower than fp32 (see docs/PERFORMANCE.md)."""
    device = torch.device(device)
    if device.type == "cuda":
        return True
    if device.type == "cpu":
        probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, hence the getattr
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return False


def fp8_supported(device: torch.device | str) -> tuple[bool, str]:
    """(whether FP8 matmuls are native here, what the device is): CUDA with compute capability >= 8.9 (Ada, Hopper)."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False, f"a {device.type} device"
    major, minor = torch.cuda.get_device_capability(device)
    return (major, minor) >= (8, 9), f"{torch.cuda.get_device_name(device)} (compute capability {major}.{minor})"


def teacher_tokens(teacher, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, depth: int, bf16: bool,
                   groups: torch.Tensor | None = None) -> torch.Tensor:
    """Teacher tokens after `depth` blocks, computed without gradient and only through those blocks."""
    ctx = torch.autocast(x.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.no_grad(), ctx:
        if groups is None:
            return teacher.forward_features(x, t, y, depth=depth).float()
        return teacher.forward_features(x, t, y, depth=depth, groups=groups).float()


def alignment(cfg: AlignConfig, student, teacher, h: torch.Tensor, x_teacher: torch.Tensor, t_teacher: torch.Tensor,
              y: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
    """The SRA term (N,): the student's tokens h after block s, through the projection head (unless ablated), against
    the teacher's tokens after block m at the teacher's input (times (N,) or per token (N, T); `groups` for its
    attention separation). `student` is the plain module (for its head)."""
    g = teacher_tokens(teacher, x_teacher, t_teacher, y, cfg.block_out_t, cfg.teacher_bf16, groups)
    p = student.ap_head(h) if cfg.use_head else h
    return token_distance(p, g, cfg.distance)


@register
class SRA:
    """The alignment term "align" (N,) on any process: the teacher sees the same x0 and noise at the process's lower
    noise level (t' = process.lower(t, k)), per token group with token groups (objectives.dts). The teacher's labels
    follow each reference: plain SRA's teacher sees the student's dropped labels (SiT-SRA loss.py
    `labels_teacher = labels_train`); with token groups, the authors' SiT-SRA_DTS_AS drops labels inside the
    student's forward only and hands its eval-mode teacher the labels as they came (`y=labels`).

    Its head is the backbone's `ap_head`: the released SiT-SRA / DiT-SRA checkpoints hold it there (`ap_head.*`), and
    the public API names it (`model.ap_head(h)`); the term trains it when it is on, and freezes it otherwise."""

    name = "align"
    Config = AlignConfig
    # what a run starts from before resolution: every preset-dependent field unset (0 blocks, None)
    unset = AlignConfig(block_out_s=0, block_out_t=0, teacher_bf16=None, weight=None, distance=None,
                        legacy_epoch_decay=None)
    student_parts = ("ap_head",)  # parts of the backbone this term trains

    @staticmethod
    def resolve(cfg: AlignConfig, preset) -> AlignConfig:
        """Fill the unset fields from the preset's row of the defaults table (blocks, distance, lambda) and the
        device (bf16 teacher only where bf16 is native: CUDA, AVX512-BF16/AMX CPUs; elsewhere it is emulated and slower
        than fp32, docs/PERFORMANCE.md)."""
        row = preset.row
        if cfg.teacher_fp8 and cfg.weight != 0:
            native, device = fp8_supported(preset.device)
            if not native:
                raise ValueError(f"--teacher-fp8 needs a GPU with FP8 tensor cores (compute capability 8.9 or "
                                 f"newer: Ada, Hopper); this run is on {device}")
        distance = cfg.distance if cfg.distance is not None else row.align_distance
        weight = cfg.weight if cfg.weight is not None else (
            row.align_weight_cos if distance in COSINES else row.align_weight_other)
        return dataclasses.replace(
            cfg, distance=distance, weight=weight,
            block_out_s=cfg.block_out_s or row.sra_blocks[0], block_out_t=cfg.block_out_t or row.sra_blocks[1],
            teacher_bf16=fast_bf16(preset.device) if cfg.teacher_bf16 is None else cfg.teacher_bf16,
            legacy_epoch_decay=distance not in COSINES if cfg.legacy_epoch_decay is None else cfg.legacy_epoch_decay)

    @staticmethod
    def validate(cfg: AlignConfig, spec) -> None:
        cfg.validate(spec.model_depth)
        if spec.fsdp and cfg.active and cfg.teacher == "online":
            raise ValueError("--teacher online is not supported with --fsdp (the teacher must be an unsharded copy)")

    def __init__(self, cfg: AlignConfig, objective, resources: dict):
        self.cfg, self.process, self.mix, self.patch_size = cfg, objective.process, objective.mix, objective.patch_size
        self.depth, self.module = cfg.block_out_s, None

    def uses(self, part: str) -> bool:
        return self.cfg.use_head

    def teacher(self, model, ema):
        """The network whose tokens are the target: the EMA (paper) or the online model (no gradient)."""
        return ema if self.cfg.teacher == "ema" else model

    @property
    def fp8_depth(self) -> int | None:
        """Blocks of the teacher to run in FP8 (its first block_out_t), or None for the bf16/fp32 teacher."""
        return self.cfg.block_out_t if self.cfg.teacher_fp8 else None

    def weight(self, epoch: int, input_size: int) -> float:
        return self.cfg.effective_weight(epoch, input_size)

    def __call__(self, b) -> torch.Tensor:
        x_teacher, t_teacher, groups = self.teacher_input(b)
        return alignment(self.cfg, b.student, b.teacher, b.tokens[self.depth], x_teacher, t_teacher,
                         self.teacher_labels(b), groups=groups)

    def teacher_labels(self, b) -> torch.Tensor:
        return b.y_clean if self.mix.active else b.y

    def teacher_forward(self, b) -> torch.Tensor:
        """The teacher's tokens alone (what `sra bench` times as the teacher's share of the step)."""
        x_teacher, t_teacher, groups = self.teacher_input(b)
        return teacher_tokens(b.teacher, x_teacher, t_teacher, self.teacher_labels(b), self.cfg.block_out_t,
                              self.cfg.teacher_bf16, groups)

    def teacher_input(self, b):
        """(input, time (N,) or per token, group ids for attention or None) of the teacher: same x0 and noise as the
        student; the offset k is the one drawn with the batch (and, with token groups, one per group)."""
        p, mix, t = self.process, self.mix, b.t
        if not mix.active:  # SRA's lower view, or t itself for the self_flow / same teacher times
            t_teacher = p.lower(t, b.draws["k"]) if mix.teacher_t == "sra" else t
            return p.corrupt(b.x0, b.noise, t_teacher)[0], t_teacher, None
        u = b.draws["u_more"].to(t.dtype) if t.is_floating_point() else b.draws["u_more"]
        k = torch.cat([b.draws["k"][:, None], p.offset_from_uniform(self.cfg.interval, self.cfg.t_max, u)], dim=1)
        t_input, t_embed, groups = teacher_view(mix, p, k, group_times(mix, t, b.draws), b.draws["groups"])
        x_teacher = p.corrupt(b.x0, b.noise, t_input, self.patch_size)[0]
        return x_teacher, t_embed, groups if mix.attention_separation else None
