"""Every preset-dependent default, in one table: `sra train` leaves these options unset (None, or 0 for blocks) and
`resolve_spec` fills them from here and from nowhere else (the terms read their part of a row in their own `resolve`).
A row per (process, size), a row per process, and the few that depend on the machine. Changing a tiny preset's
training settings is editing its row."""
from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class SizeRow:
    lr: float                     # AdamW learning rate
    lr_warmup_steps: int          # linear warm-up in optimizer steps
    ema_decay: float              # EMA decay per step
    ema_warmup: bool              # cap the decay at (1 + n) / (10 + n)
    max_train_steps: int          # optimizer steps to train for
    sra_blocks: tuple[int, int]   # SRA student -> teacher block (1-indexed)
    repa_block: int               # REPA's student block (their --encoder-depth)


# The paper's recipe (AdamW 1e-4 constant, EMA 0.9999, no warm-up) for the published sizes, and its student -> teacher
# blocks (SiT-B 3->8, L 6->16, XL 8->20; DiT-B 3->7, L 6->14, XL 8->16; S as B). The tiny CPU presets (*-T) train
# from scratch in minutes: a 10x learning rate with a 200-step warm-up and a short EMA that warms up, so that the
# EMA's samples are usable within the run's 1200 steps; blocks 2->4 of their 6.
_PAPER = dict(lr=1e-4, lr_warmup_steps=0, ema_decay=0.9999, ema_warmup=False, max_train_steps=1200)
_TINY = dict(lr=1e-3, lr_warmup_steps=200, ema_decay=0.999, ema_warmup=True, max_train_steps=1200)
# DiT's epsilon loss weighs an error of the clean image by the SNR, so at high noise, where a sample's class is
# decided, a tiny DiT gets a hundredth of the signal SiT's velocity loss gives it: at SiT's 1e-3 its samples hardly
# follow their class within 1200 steps. 3e-3 lets DDPM learn its classes at CPU scale (docs/DIT.md).
_TINY_DIT = {**_TINY, "lr": 3e-3}
# Keyed by the process (sra.process.PROCESSES): flow is SiT's, ddpm DiT's.
SIZE_DEFAULTS: dict[tuple[str, str], SizeRow] = {
    ("flow", "T"): SizeRow(**_TINY, sra_blocks=(2, 4), repa_block=2),
    ("flow", "S"): SizeRow(**_PAPER, sra_blocks=(3, 8), repa_block=4),
    ("flow", "B"): SizeRow(**_PAPER, sra_blocks=(3, 8), repa_block=4),
    ("flow", "L"): SizeRow(**_PAPER, sra_blocks=(6, 16), repa_block=8),
    ("flow", "XL"): SizeRow(**_PAPER, sra_blocks=(8, 20), repa_block=8),
    ("ddpm", "T"): SizeRow(**_TINY_DIT, sra_blocks=(2, 4), repa_block=2),
    ("ddpm", "S"): SizeRow(**_PAPER, sra_blocks=(3, 7), repa_block=4),
    ("ddpm", "B"): SizeRow(**_PAPER, sra_blocks=(3, 7), repa_block=4),
    ("ddpm", "L"): SizeRow(**_PAPER, sra_blocks=(6, 14), repa_block=8),
    ("ddpm", "XL"): SizeRow(**_PAPER, sra_blocks=(8, 16), repa_block=8),
}


@dataclass(frozen=True)
class ProcessRow:
    align_distance: str           # the alignment distance
    align_weight_cos: float       # lambda with either cosine distance
    align_weight_other: float     # lambda with smooth-L1 / L1 / L2 (these take the released epoch decay)


# As the released code trains each family. SiT (SiT-SRA train.py): cosine with lambda 0.5, no decay (their default
# --loss-type cos; ours is the per-token cosine, `cos-over-tokens` is theirs as computed, see
# objectives.align.token_distance); with smooth-L1 2 x 0.1 = 0.2 with the epoch decay (the paper's setting).
# DiT (DiT-SRA train.py, smooth-L1 only): 0.4 x 0.1 = 0.04 with the epoch decay; the released code multiplies its
# DiT term by 0.4 where SiT's has 2, so DiT's lambda is a fifth of SiT's.
PROCESS_DEFAULTS: dict[str, ProcessRow] = {
    "flow": ProcessRow(align_distance="cos", align_weight_cos=0.5, align_weight_other=0.2),
    "ddpm": ProcessRow(align_distance="sml1", align_weight_cos=0.5, align_weight_other=0.04),
}

# Where REPA's defaults come from (sihyun-yu/REPA as this project's reference index stores it, @67f7145).
REPA_DEFAULTS_FROM = {
    "weight": "ours: 0 (off), REPA is opt-in here; REPA train.py line 436 --proj-coeff default 0.5 (README.md's "
              "command passes --proj-coeff=0.5): the value to turn it on with",
    "block L/XL": "REPA train.py line 400 --encoder-depth default 8 (README.md's SiT-XL/2 command passes 8)",
    "block S/B": "4: the REPA paper's SiT-B/2 setting (paper, not re-checked); train.py's default 8 is 2/3 of SiT-B's "
                 "12 blocks",
    "block T": "ours: 2 of the tiny preset's 6 blocks (a third, as 4 of SiT-B's 12)",
    "projector_dim": "REPA models/sit.py line 180: SiT(..., projector_dim=2048)",
}


@dataclass(frozen=True)
class Row(SizeRow, ProcessRow):
    """A preset's row: its size row and its process row together (what `resolve_spec` and the terms read)."""


def preset_row(process: str, size: str) -> Row:
    if (process, size) not in SIZE_DEFAULTS:
        raise ValueError(f"no defaults for the {process} process at size {size}")
    parts = {**vars(SIZE_DEFAULTS[(process, size)]), **vars(PROCESS_DEFAULTS[process])}
    return Row(**{f.name: parts[f.name] for f in fields(Row)})


TRAINING_DEFAULTS = ("lr", "lr_warmup_steps", "ema_decay", "ema_warmup", "max_train_steps")  # the row's run options

