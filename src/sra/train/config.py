"""Training configuration: one typed dataclass whose fields carry their help text, flag and choices (`sra.options`), so
it alone defines the `sra train` flags and the config-file format; resolved against the data and preset and saved as
config.json next to the run."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass

from .. import options
from ..models.presets import MODEL_NAMES, SIZES, parse_name
from ..objectives import AlignConfig, DispConfig, FlowConfig, MixConfig, RepaConfig
from ..options import option
from ..process import process_for
from .defaults import fill
from .tracking import REPORTERS, check_reporter


@dataclass(kw_only=True)
class TrainConfig:
    # -- model and data
    model: str = option("SiT-T/4", group="model and data", metavar="NAME",
                        help=f"model preset; one of {', '.join(MODEL_NAMES)} (*-T: tiny CPU presets)")
    data_dir: str | None = option(None, resumable=True,
                                  help="Fashion-MNIST IDX folder, class-subfolder image folder, latent store from `sra "
                                       "prepare`, or 'digits' (unset: Debian's Fashion-MNIST, else sklearn digits)")
    depth: int | None = option(None, help="number of transformer blocks (unset: the preset's; e.g. SiT-T/4 with "
                                          "--depth 12 is a deeper model that still trains on a CPU)")
    input_size: int | None = option(None, help="model input side in pixels or latents (unset: from the data)")
    in_channels: int | None = option(None, help="model input channels (unset: from the data)")
    num_classes: int | None = option(None, help="number of classes (unset: from the data)")
    # -- run folder (resumable: where the folder is, not what it holds; a moved or copied run folder resumes)
    output_dir: str = option("runs", group="run folder", resumable=True, help="parent folder of runs")
    exp_name: str = option("demo", resumable=True, help="run folder name: OUTPUT_DIR/EXP_NAME")
    # -- optimisation
    batch_size: int = option(64, group="optimisation",
                             help="global batch in images per optimizer step (all ranks, all micro-steps)")
    grad_accum: int = option(1, help="gradient-accumulation micro-steps per optimizer step")
    max_train_steps: int | None = option(None, resumable=True, help="optimizer steps to train for (unset: 1200)")
    lr: float | None = option(None, help="AdamW learning rate (unset: 1e-4 as the paper; 1e-3 for SiT-T, "
                                         "3e-3 for DiT-T)")
    lr_warmup_steps: int | None = option(None, help="linear learning-rate warm-up in steps (unset: 0; 200 for *-T)")
    adam_betas: tuple[float, float] = option((0.9, 0.999), metavar="BETA", help="AdamW betas")
    weight_decay: float = option(0.0, help="AdamW weight decay (paper: none)")
    max_grad_norm: float = option(1.0, help="gradient clipping threshold (global L2 norm)")
    mixed_precision: str = option("no", choices=("no", "bf16", "fp16"),
                                  help="autocast precision of the trained model (fp16 uses loss scaling)")
    compile: bool = option(False, resumable=True, help="torch.compile the trained model (the EMA/teacher stays eager)")
    fsdp: bool = option(False, help="shard parameters, gradients and optimizer state with FSDP2 under torchrun (for "
                                    "L/XL); DDP otherwise when world size > 1")
    activation_checkpointing: bool = option(False, help="recompute block activations in backward (saves memory, "
                                                        "about 30 % slower)")
    # -- EMA (sampling model and SRA teacher)
    ema_decay: float | None = option(None, group="EMA (sampling model and SRA teacher)",
                                     help="EMA decay per optimizer step (unset: 0.9999 as the paper; 0.999 for *-T)")
    ema_half_life_kimg: float | None = option(None, help="EMA half-life in thousands of images (overrides --ema-decay)")
    ema_warmup: bool | None = option(None, help="cap the decay at (1+n)/(10+n) at step n (unset: on for *-T presets)")
    # -- objective (0 blocks / unset values: the preset's and family's, from train/defaults.py)
    flow: FlowConfig = option(group="objective", help="SiT path and training times", factory=FlowConfig)
    align: AlignConfig = option(help="the SRA term", factory=lambda: AlignConfig(
        block_out_s=0, block_out_t=0, teacher_bf16=None, weight=None, distance=None, legacy_epoch_decay=None))
    mix: MixConfig = option(help="token groups: dual-timestep scheduling, attention separation (objectives.dts)",
                            factory=MixConfig)
    repa: RepaConfig = option(help="REPA: alignment to a frozen external encoder (objectives.repa)", factory=RepaConfig)
    disp: DispConfig = option(help="Dispersive Loss (objectives.dispersive)", factory=DispConfig)
    # -- logging, samples, checkpoints
    seed: int = option(0, group="logging, samples, checkpoints",
                       help="global seed: data order, noise, time draws (per step, rank-independent)")
    log_every: int = option(50, resumable=True, help="steps between metrics.jsonl lines")
    sample_every: int = option(500, resumable=True, help="steps between sample grids (and the last step)")
    sample_steps: int = option(30, help="sampler steps for the sample grids (Euler ODE for SiT, DDIM for DiT)")
    checkpoint_every: int = option(500, resumable=True, help="steps between checkpoints (and the last step)")
    keep_last: int = option(0, resumable=True, help="keep only the newest K checkpoints, besides milestones; an older one "
                                                    "is deleted once a newer one is complete on disk (0: keep all)")
    keep_every: int = option(0, resumable=True, help="milestones: checkpoints at multiples of M steps are never deleted "
                                                     "by --keep-last (0: none)")
    eval_every: int = option(0, resumable=True, help="steps between evaluations of the EMA, logged like the losses: "
                                                     "FID and IS with --eval-ref, else FD-FMNIST (Fashion-MNIST); 0: off")
    eval_samples: int = option(1000, resumable=True, aliases=("--eval-num",),
                               help="samples per in-training evaluation (the paper's FID uses 50 000; 10 000 is a "
                                    "common in-training compromise)")
    eval_ref: str | None = option(None, resumable=True,
                                  help="FID reference: an ADM reference batch .npz (e.g. VIRTUAL_imagenet256_labeled.npz) "
                                       "or statistics from `sra eval --save-stats`; samples use the sample-grid sampler "
                                       "(--sample-steps, no guidance) and the run's VAE")
    eval_inception: str | None = option(None, resumable=True,
                                        help="pytorch-fid's Inception weights file (unset: "
                                             "$TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth)")
    report_to: str | None = option(None, resumable=True, choices=REPORTERS,
                                   help="also log metrics, sample grids and evaluations to TensorBoard (RUN/tensorboard) "
                                        "or W&B (offline unless WANDB_MODE=online); metrics.jsonl is always written "
                                        "(unset: tensorboard where installed, else none)")
    max_nonfinite_steps: int = option(100, resumable=True,
                                      help="stop with exit status 3 after this many consecutive steps with a "
                                           "non-finite loss or gradient (0: never); the last good checkpoint is kept")
    num_workers: int = option(0, resumable=True, help="DataLoader workers (datasets not held in memory)")
    progress: bool = option(True, resumable=True, help="show a progress bar")

    @property
    def family(self) -> str:
        return parse_name(self.model)[0]

    @property
    def process(self):
        """The model family's process (sra.process), with this config's path and training times."""
        return process_for(self.family, self.flow.path, self.flow.time_sampling)

    @property
    def model_depth(self) -> int:
        """Blocks of the trained model: --depth, else the preset's."""
        return self.depth if self.depth is not None else SIZES[parse_name(self.model)[1]][0]

    def resolve(self, shape: tuple[int, int, int], num_classes: int, device: str = "cpu") -> "TrainConfig":
        """Fill the None/0 defaults from the data and the preset; validate everything. Returns a new config."""
        c = dataclasses.replace(self, flow=dataclasses.replace(self.flow), align=dataclasses.replace(self.align),
                                mix=dataclasses.replace(self.mix), repa=dataclasses.replace(self.repa),
                                disp=dataclasses.replace(self.disp))
        family, size, _ = parse_name(c.model)
        for name in ("input_size", "in_channels", "num_classes"):  # 0 is not "unset": refused, not filled
            if getattr(c, name) is not None and getattr(c, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, or left unset to take it from the data "
                                 f"(got {getattr(c, name)})")
        c.in_channels = c.in_channels or shape[0]
        c.input_size = c.input_size or shape[-1]
        c.num_classes = c.num_classes or num_classes
        if shape[1] != shape[2]:
            raise ValueError(f"images are {shape[1]}x{shape[2]} pixels; the model takes square inputs (crop or resize "
                             "them, or encode them with `sra prepare`)")
        if c.num_classes < num_classes:
            raise ValueError(f"--num-classes {c.num_classes} is smaller than the data's {num_classes} classes")
        if (c.in_channels, c.input_size) != (shape[0], shape[-1]):
            raise ValueError(f"data is {shape[0]}x{shape[1]}x{shape[2]} but the config asks for "
                             f"{c.in_channels}x{c.input_size}x{c.input_size}")
        fill(c, family, size, c.model_depth, device)
        c.validate()
        return c

    def validate(self) -> None:
        depth = self.model_depth
        if depth < 1:
            raise ValueError(f"--depth must be >= 1 (got {depth})")
        options.check_choices(self)
        if self.report_to:
            check_reporter(self.report_to)
        if self.batch_size < 1 or self.grad_accum < 1 or self.max_train_steps < 1:
            raise ValueError(f"--batch-size, --grad-accum and --max-train-steps must be >= 1 (got {self.batch_size}, "
                             f"{self.grad_accum}, {self.max_train_steps})")
        if self.batch_size % self.grad_accum:
            raise ValueError(f"--batch-size {self.batch_size} is not divisible by --grad-accum {self.grad_accum}")
        check_run_name(self.exp_name)
        if not 0 <= self.seed < 2 ** 63:
            raise ValueError(f"--seed must be in [0, 2^63) (got {self.seed})")
        if self.eval_ref and not self.eval_every:
            raise ValueError("--eval-ref needs --eval-every N (steps between evaluations)")
        if self.eval_ref and self.eval_samples < 10:
            raise ValueError(f"--eval-num must be >= 10 with --eval-ref (the Inception Score uses 10 splits); "
                             f"got {self.eval_samples}")
        if self.eval_every and self.eval_samples < 2:
            raise ValueError(f"--eval-num must be >= 2 (a Frechet distance needs two samples; got {self.eval_samples})")
        if self.eval_ref and not os.path.isfile(self.eval_ref):
            raise ValueError(f"--eval-ref {self.eval_ref} does not exist (or is not a file)")
        if self.keep_last < 0 or self.keep_every < 0:
            raise ValueError(f"--keep-last and --keep-every must be >= 0 (got {self.keep_last}, {self.keep_every})")
        for name in ("log_every", "sample_every", "sample_steps", "checkpoint_every", "eval_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(self, name)})")
        for name in ("eval_every", "num_workers", "max_nonfinite_steps", "lr_warmup_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0 (got {getattr(self, name)})")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"--lr must be a finite number > 0 (got {self.lr})")
        if self.ema_decay is not None and not 0 <= self.ema_decay <= 1:
            raise ValueError(f"--ema-decay must be in [0, 1] (got {self.ema_decay})")
        if self.ema_half_life_kimg is not None and not (math.isfinite(self.ema_half_life_kimg)
                                                        and self.ema_half_life_kimg > 0):
            raise ValueError(f"--ema-half-life-kimg must be a finite number > 0 (got {self.ema_half_life_kimg})")
        if not (math.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ValueError(f"--max-grad-norm must be a finite number > 0 (got {self.max_grad_norm})")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"--weight-decay must be a finite number >= 0 (got {self.weight_decay})")
        if not all(0 <= b < 1 for b in self.adam_betas):
            raise ValueError(f"Adam betas must be in [0, 1) (got {self.adam_betas})")
        if "flow" in self.process.config_sections:
            self.flow.validate()
        if self.fsdp and self.align.teacher == "online":
            raise ValueError("--teacher online is not supported with --fsdp (the teacher must be an unsharded copy)")
        self.align.validate(depth)
        if not (math.isfinite(self.repa.weight) and self.repa.weight >= 0):  # nan switched REPA off silently
            raise ValueError(f"--repa-weight must be a finite number >= 0 (got {self.repa.weight})")
        options.check_finite(self)  # every other float option (--mask-ratio 0.5 nan, ...): nan/inf refused
        self.mix.validate()
        self.repa.validate(depth)
        self.disp.validate(depth)

    def check_fits(self, num_items: int, world_size: int = 1) -> None:
        """The resolved config against the data and the process count; `sra train` and its --dry-run both call it."""
        if self.batch_size % (world_size * self.grad_accum):
            raise ValueError(f"global batch {self.batch_size} is not divisible by world size {world_size} x "
                             f"accumulation {self.grad_accum}")
        if num_items < self.batch_size:
            raise ValueError(f"the data has {num_items} items, fewer than the batch size {self.batch_size}")

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """From config.json / a config file: nested dicts, possibly partial (missing keys keep this class's defaults,
        including the nested ones' 0/unset), unknown keys refused."""
        return options.from_dict(cls, options.merge(cls().to_dict(), d))


# Fields that may change between a run and its resumption (they do not change the math).
RESUMABLE_CHANGES = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("resumable")}


def check_run_name(name: str) -> None:
    """--exp-name is a relative path that stays inside --output-dir: no '..', not absolute, no empty or overlong
    part (most file systems take 255 bytes per name)."""
    parts = name.replace("\\", "/").rstrip("/").split("/")
    if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"--exp-name {name!r} must be a relative folder name inside --output-dir (no '..', '.', "
                         "leading '/' or empty parts)")
    if any(len(p.encode()) > 255 for p in parts):
        raise ValueError(f"--exp-name is too long ({max(len(p.encode()) for p in parts)} bytes; at most 255 per "
                         "folder name)")


def config_differences(old: dict, new: dict) -> list[str]:
    """Keys (dotted) whose values differ, ignoring those that may change on resume."""
    diffs = []
    for k in sorted(set(old) | set(new)):
        if k in RESUMABLE_CHANGES:
            continue
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{k}.{s}" for s in config_differences(a, b)]
        elif a != b:
            diffs.append(k)
    return diffs
