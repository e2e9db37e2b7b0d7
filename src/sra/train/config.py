"""Training configuration: one typed dataclass, a comment on every field, resolved against the data and preset and
saved as config.json next to the run."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from ..models.presets import default_sra_layers, parse_name
from ..objectives import AlignConfig, FlowConfig, MixConfig, RepaConfig
from ..objectives.align import fast_bf16

# Fields that may change between a run and its resumption (they do not change the math).
RESUMABLE_CHANGES = {"max_train_steps", "log_every", "sample_every", "checkpoint_every", "num_workers", "compile",
                     "data_dir", "progress", "eval_every", "eval_samples"}


@dataclass(kw_only=True)
class TrainConfig:
    # -- model and data
    model: str = "SiT-T/4"                # preset name, e.g. SiT-B/2, DiT-XL/2, SiT-T/4 (tiny CPU preset)
    data_dir: str | None = None           # IDX folder, image folder, latent store, "digits"; None: Fashion-MNIST or digits
    input_size: int | None = None         # model input side (pixels or latents); None: from the data
    in_channels: int | None = None        # None: from the data
    num_classes: int | None = None        # None: from the data
    # -- run folder
    output_dir: str = "runs"              # parent folder of runs
    exp_name: str = "demo"                # run folder name: OUTPUT_DIR/EXP_NAME
    # -- optimisation
    batch_size: int = 64                  # global batch (images per optimizer step, all ranks and accumulation)
    grad_accum: int = 1                   # gradient-accumulation micro-steps per optimizer step
    max_train_steps: int = 1200           # optimizer steps
    lr: float | None = None               # AdamW learning rate; None: 1e-4 (paper), 1e-3 for the tiny preset
    lr_warmup_steps: int | None = None    # linear warm-up steps; None: 0 (paper), 200 for the tiny preset
    adam_betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0             # AdamW weight decay (paper: none)
    max_grad_norm: float = 1.0            # gradient clipping (global L2 norm)
    mixed_precision: str = "no"           # no | bf16 | fp16 (fp16 uses loss scaling)
    compile: bool = False                 # torch.compile the trained model (the EMA/teacher stays eager)
    fsdp: bool = False                    # shard parameters, gradients and optimizer state with FSDP2 (L/XL models)
    activation_checkpointing: bool = False  # recompute block activations in backward (saves memory, ~30 % slower)
    # -- EMA (sampling model and SRA teacher)
    ema_decay: float | None = None        # per-step decay; None: 0.9999 (paper), 0.999 for the tiny preset
    ema_half_life_kimg: float | None = None  # half-life in thousands of images; overrides ema_decay
    ema_warmup: bool | None = None        # cap decay at (1+n)/(10+n); None: on for the tiny preset only
    # -- objective
    flow: FlowConfig = field(default_factory=FlowConfig)
    align: AlignConfig = field(default_factory=lambda: AlignConfig(block_out_s=0, block_out_t=0, teacher_bf16=None))
    # (0 blocks / None precision: the preset's default)
    mix: MixConfig = field(default_factory=MixConfig)  # token groups: dual-timestep scheduling, attention separation
    repa: RepaConfig = field(default_factory=RepaConfig)  # REPA: alignment to a frozen external encoder
    # -- logging, samples, checkpoints
    seed: int = 0                         # global seed: data order, noise, time draws (per step, rank-independent)
    log_every: int = 50                   # steps between metrics.jsonl lines
    sample_every: int = 500               # steps between sample grids (and the last step)
    sample_steps: int = 30                # sampler steps for the sample grid (Euler for SiT, DDIM for DiT)
    checkpoint_every: int = 500           # steps between checkpoints (and the last step)
    eval_every: int = 0                   # steps between FD-FMNIST evaluations of the EMA (Fashion-MNIST only; 0: off)
    eval_samples: int = 1000              # samples per in-training evaluation
    num_workers: int = 0                  # DataLoader workers for datasets that are not held in memory
    progress: bool = True                 # show a progress bar

    @property
    def family(self) -> str:
        return parse_name(self.model)[0]

    @property
    def tiny(self) -> bool:
        return parse_name(self.model)[1] == "T"

    def resolve(self, shape: tuple[int, int, int], num_classes: int, device: str = "cpu") -> "TrainConfig":
        """Fill the None/0 defaults from the data and the preset; validate everything. Returns a new config."""
        c = dataclasses.replace(self, flow=dataclasses.replace(self.flow), align=dataclasses.replace(self.align),
                                mix=dataclasses.replace(self.mix), repa=dataclasses.replace(self.repa))
        family, size, _ = parse_name(c.model)
        c.in_channels = c.in_channels or shape[0]
        c.input_size = c.input_size or shape[-1]
        c.num_classes = c.num_classes or num_classes
        if (c.in_channels, c.input_size) != (shape[0], shape[-1]):
            raise ValueError(f"data is {shape[0]}x{shape[1]}x{shape[2]} but the config asks for "
                             f"{c.in_channels}x{c.input_size}x{c.input_size}")
        tiny = size == "T"
        c.lr = c.lr if c.lr is not None else (1e-3 if tiny else 1e-4)
        c.lr_warmup_steps = c.lr_warmup_steps if c.lr_warmup_steps is not None else (200 if tiny else 0)
        c.ema_decay = c.ema_decay if c.ema_decay is not None else (0.999 if tiny else 0.9999)
        c.ema_warmup = c.ema_warmup if c.ema_warmup is not None else tiny
        if c.align.teacher_bf16 is None:
            # bf16 only where it is native (CUDA, AVX512-BF16/AMX CPUs); on an AVX2 CPU bf16 autocast made the
            # teacher 2.3x (width 128) to 4x (width 768) slower than fp32 (docs/PERFORMANCE.md).
            c.align.teacher_bf16 = fast_bf16(device)
        s, t = default_sra_layers(c.model)
        c.align.block_out_s = c.align.block_out_s or s
        c.align.block_out_t = c.align.block_out_t or t
        if c.repa.active:
            from ..objectives.repa import REPA_BLOCKS
            c.repa.block = c.repa.block or REPA_BLOCKS[size]
        c.validate()
        return c

    def validate(self) -> None:
        from ..models.presets import SIZES

        depth = SIZES[parse_name(self.model)[1]][0]
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"unknown mixed precision {self.mixed_precision!r}; choices: no, bf16, fp16")
        if self.batch_size < 1 or self.grad_accum < 1 or self.max_train_steps < 0:
            raise ValueError("batch size and accumulation must be >= 1 and max steps >= 0")
        if self.family == "SiT":
            self.flow.validate()
        if self.fsdp and self.align.teacher == "online":
            raise ValueError("--teacher online is not supported with --fsdp (the teacher must be an unsharded copy)")
        self.align.validate(depth)
        self.mix.validate()
        self.repa.validate(depth)
        if self.family == "DiT" and (self.mix.active or self.repa.active):
            raise ValueError("token groups (--mask-ratio) and REPA are implemented for SiT models only")
        if self.align.active and self.repa.active and self.align.block_out_s != self.repa.block:
            raise ValueError(f"SRA and REPA together must read the same student block (got {self.align.block_out_s} "
                             f"and {self.repa.block})")

    def to_dict(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        flow, align = FlowConfig(**d.pop("flow", {})), AlignConfig(**d.pop("align", {}))
        mix, repa = MixConfig(**d.pop("mix", {})), RepaConfig(**d.pop("repa", {}))
        mix.mask_ratio = tuple(mix.mask_ratio)
        if "adam_betas" in d:
            d["adam_betas"] = tuple(d["adam_betas"])
        return cls(flow=flow, align=align, mix=mix, repa=repa, **d)


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
