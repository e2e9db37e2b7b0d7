"""The run spec: one frozen dataclass holding every option of a run, with its process (name and config, sra.process)
and its terms (name -> config, sra.objectives.TERMS). The option fields carry their help text, flag and choices
(`sra.options`), so they alone define the `sra train` flags and the config-file format; the process's and the
terms' flags come from their own config dataclasses.

`resolve_spec` is the one function that turns a preset, a config file and the given flags into the spec of a run:
defaults from the data and the preset's row (train/defaults.py), validated. The CLI, `--dry-run` and `sra bench`
call it; nothing below re-resolves.

config.json (and every checkpoint and export) holds `to_dict()`: the options, `process` ({"name": "flow", "path":
...}), `mix`, and one section per term by its name (`align`, `repa`, `disp`, ...).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .. import options
from .. import process as processes
from ..data import load_dataset
from ..models.loading import LEGACY_SECTION, spec_process
from ..models.presets import MODEL_NAMES, SIZES, check_process, default_process, parse_name
from ..objectives import TERMS, MixConfig, Preset
from ..options import option
from ..runfolder import StopSignals
from .defaults import TRAINING_DEFAULTS, preset_row
from .recipes import recipe
from .schedule import SCHEDULES
from .tracking import REPORTERS, check_reporter, default_reporter


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The run spec: every option of a run. `resolve_spec` makes the one a run uses (frozen, every default filled,
    validated); config.json, checkpoints and exports hold its `to_dict()`."""
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
    init_from: str | None = option(None, metavar="CKPT",
                                   help="start a new run (step 0, a fresh optimizer) from the weights of a run folder, "
                                        "one of its checkpoints, an `sra export --format safetensors` folder or an "
                                        "authors' released file: the model from its online weights ('model'; its EMA "
                                        "where it has none), the EMA from its EMA; refused unless its architecture is "
                                        "this run's. A run that resumes ignores it: its checkpoint wins")
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
    lr_schedule: str = option("constant", choices=SCHEDULES,
                              help="learning rate after the warm-up: constant at --lr (the paper), or a cosine or "
                                   "linear decay from --lr to --lr-min, reached at --max-train-steps")
    lr_min: float = option(0.0, help="learning rate at --max-train-steps with --lr-schedule cosine or linear")
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
    # -- the batch view of every term: token groups (objectives.dts)
    mix: MixConfig = option(help="token groups: dual-timestep scheduling, attention separation (objectives.dts)",
                            factory=MixConfig)
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
    threads: int = option(0, resumable=True, help="CPU threads for torch's operations (0: torch's default, one per "
                                                  "core; on a shared machine a few run far faster than all)")
    progress: bool = option(True, resumable=True, help="show a progress bar")
    preempt_signal: str = option("none", resumable=True, choices=StopSignals.PREEMPT_SIGNALS,
                                 help="the signal a cluster sends before it stops the job (SLURM: --signal=USR1@120): "
                                      "the run finishes its step, saves a checkpoint and exits with status "
                                      f"{StopSignals.PREEMPTED}, and the same command, requeued, resumes "
                                      "(examples/slurm/)")

    process: object = field(default=None)   # the process's config (a `Config` of sra.process.PROCESSES)
    terms: dict = field(default_factory=dict)  # term name -> its config, every registered term (inactive ones too)

    def __post_init__(self):
        if self.process is None:  # the preset's default process, with its default settings
            object.__setattr__(self, "process", processes.process_class(default_process(self.model)).Config())
        unknown = [name for name in self.terms if name not in TERMS]
        if unknown:
            raise ValueError(f"unknown term {unknown[0]!r}; registered: {', '.join(TERMS)}")
        object.__setattr__(self, "terms", {name: self.terms.get(name, cls.unset) for name, cls in TERMS.items()})

    @property
    def model_depth(self) -> int:
        """Blocks of the trained model: --depth, else the preset's."""
        return self.depth if self.depth is not None else SIZES[parse_name(self.model)[1]][0]

    @property
    def patch_size(self) -> int:
        return parse_name(self.model)[2]

    @property
    def process_name(self) -> str:
        return processes.class_of_config(self.process).name

    def term(self, name: str):
        """The config of a registered term."""
        return self.terms[name]

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("process", "terms")}
        d = json.loads(json.dumps({k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v for k, v in d.items()}))
        d["process"] = processes.section_of(self.process)
        d.update({name: json.loads(json.dumps(dataclasses.asdict(cfg))) for name, cfg in self.terms.items()})
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """From config.json / a config file / merged options: nested dicts, possibly partial (missing keys keep their
        unset defaults), unknown keys refused in one line. A spec written before the `process` section existed has
        a `flow` section instead: it is read as the model's process with those settings."""
        if not isinstance(d, dict):
            raise ValueError(f"a config must be a mapping of options, got {d!r}")
        d = dict(d)
        sections = {name: d.pop(name) for name in list(d) if name in TERMS}
        section = spec_process(d, model=d.get("model", cls.model))  # an old spec's `flow` section too
        d.pop("process", None), d.pop(LEGACY_SECTION, None)
        base = options.from_dict(cls, d)
        if section is not None and not isinstance(section, dict):
            raise ValueError(f"option process must be a mapping, got {section!r}")
        section = dict(section or {})
        name = section.pop("name", None) or default_process(base.model)
        check_process(base.model, processes.process_class(name))
        known = {f.name for f in dataclasses.fields(processes.process_class(name).Config)}
        unknown = [k for k in section if k not in known]
        if unknown:
            owners = [p for p, c in processes.PROCESSES.items()
                      if unknown[0] in {f.name for f in dataclasses.fields(c.Config)}]
            where = f" applies to the {', '.join(owners)} process only" if owners else " is not an option of any process"
            raise ValueError(f"{process_flag(unknown[0])}{where}; {base.model} trains with the {name} process")
        process = processes.config_from_section({"name": name, **section})
        terms = {}
        for tname, value in sections.items():
            if not isinstance(value, dict):
                raise ValueError(f"option {tname} must be a mapping, got {value!r}")
            start = dataclasses.asdict(TERMS[tname].unset)
            terms[tname] = options.from_dict(TERMS[tname].Config, {**start, **value}, prefix=f"{tname}.")
        return dataclasses.replace(base, process=process, terms=terms)

    def check_fits(self, num_items: int, world_size: int = 1) -> None:
        """The resolved spec against the data and the process count."""
        if self.batch_size % (world_size * self.grad_accum):
            raise ValueError(f"global batch {self.batch_size} is not divisible by world size {world_size} x "
                             f"accumulation {self.grad_accum}")
        if num_items < self.batch_size:
            raise ValueError(f"the data has {num_items} items, fewer than the batch size {self.batch_size}")

    @property
    def resolved(self) -> bool:
        return None not in (self.input_size, self.in_channels, self.num_classes, self.lr, self.max_train_steps)


def process_flag(name: str) -> str:
    """The flag of a process option, e.g. path -> --path-type."""
    for cls in processes.PROCESSES.values():
        for f in dataclasses.fields(cls.Config):
            if f.name == name:
                return options.flag_name(f)
    return f"process.{name}"


# ----------------------------------------------------------------------------------------------------------------
# Flags: the options of the spec, of every process and of every registered term
# ----------------------------------------------------------------------------------------------------------------

def sections() -> list[tuple[str, object]]:
    """(prefix, config instance) of every nested option section beside the spec's own fields."""
    procs = [("process.", cls.Config()) for cls in processes.PROCESSES.values()]
    return procs + [(f"{name}.", cls.unset) for name, cls in TERMS.items()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    options.add_arguments(parser, TrainConfig())
    for prefix, config in sections():
        options.add_arguments(parser, config, prefix)


def option_fields() -> dict:
    """Dotted option name -> its field, for the spec, every process and every registered term."""
    fields = dict(options.option_names(TrainConfig))
    for prefix, config in sections():
        fields.update({prefix + k: f for k, f in options.option_names(type(config)).items()})
    return fields


def given(args: argparse.Namespace) -> dict:
    """The options given on the command line, as a nested dict (flags not given are absent from the namespace)."""
    names = option_fields()
    return options.nest({k: (tuple(v) if isinstance(v, list) else v) for k, v in vars(args).items() if k in names})


# ----------------------------------------------------------------------------------------------------------------
# Config files
# ----------------------------------------------------------------------------------------------------------------

def unique_keys(pairs: list) -> dict:
    """A mapping from (key, value) pairs; a key given twice is refused (the second would silently win)."""
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"option {k!r} is given twice")
        d[k] = v
    return d


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key given twice in one mapping."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(k, deep=deep) for k, _ in node.value]
        repeated = next((k for i, k in enumerate(keys) if k in keys[:i]), None)
        if repeated is not None:
            raise ValueError(f"option {repeated!r} is given twice")
        return super().construct_mapping(node, deep=deep)


def load_config_file(path: str | Path) -> dict:
    """A YAML or JSON config file as a dict (YAML reads JSON too; .json files get JSON's error messages)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            d = json.loads(text, object_pairs_hook=unique_keys)
        else:
            d = yaml.load(text, Loader=UniqueKeyLoader)
    except Exception as e:  # json.JSONDecodeError, yaml.YAMLError, a repeated key
        raise ValueError(f"cannot parse config file {path}: {str(e).splitlines()[0]}") from None
    if not isinstance(d, dict):
        raise ValueError(f"config file {path} must hold a mapping of options, not {type(d).__name__}")
    return d


# ----------------------------------------------------------------------------------------------------------------
# Resolution: the one place defaults are filled
# ----------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DataShape:
    """What resolution needs of the data: the sample shape (C, H, W), the classes and the number of items."""
    shape: tuple[int, int, int]
    num_classes: int
    num_items: int


def given_spec(flags: dict | None = None, *, preset: str | None = None,
               config_file: str | None = None) -> TrainConfig:
    """The options as given, before resolution: the defaults, then the preset, then the config file, then the flags
    (later ones win); unset values stay unset."""
    d = {}
    if preset is not None:  # '' is an unknown recipe, not "none"
        d = options.merge(d, recipe(preset).config)
    if config_file:
        d = options.merge(d, load_config_file(config_file))
    return TrainConfig.from_dict(options.merge(d, flags or {}))


def resolve_spec(flags: dict | None = None, *, preset: str | None = None, config_file: str | None = None,
                 data=None, device: str = "cpu", world_size: int = 1):
    """The run spec of a preset, a config file and the given flags (in that order; later ones win), resolved against
    the data and the device: (spec, dataset). `data`: a dataset or a `DataShape` (None: the spec's --data-dir is
    loaded). Every default is filled here, from the data and the preset's row, and everything is validated."""
    cfg = given_spec(flags, preset=preset, config_file=config_file)
    if preset and recipe(preset).data and cfg.data_dir is None:
        raise ValueError(f"--preset {preset} needs --data-dir: a {recipe(preset).data}")
    for name in ("input_size", "in_channels", "num_classes"):  # 0 is not "unset": refused, not filled
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, or left unset to take it from the data "
                             f"(got {getattr(cfg, name)})")
    dataset = load_dataset(cfg.data_dir) if data is None else data
    info = dataset if isinstance(dataset, DataShape) else DataShape(tuple(dataset.shape), dataset.num_classes,
                                                                   len(dataset))
    spec = resolve(cfg, info.shape, info.num_classes, device)
    spec.check_fits(info.num_items, world_size)
    return spec, dataset


def resolve(cfg: TrainConfig, shape: tuple[int, int, int], num_classes: int, device: str) -> TrainConfig:
    """`cfg` with the data's shape and classes, the preset's row and the device filled in, validated."""
    shape = tuple(shape)
    if shape[1] != shape[2]:
        raise ValueError(f"images are {shape[1]}x{shape[2]} pixels; the model takes square inputs (crop or resize "
                         "them, or encode them with `sra prepare`)")
    size = dict(in_channels=cfg.in_channels or shape[0], input_size=cfg.input_size or shape[-1],
                num_classes=cfg.num_classes or num_classes)
    if size["num_classes"] < num_classes:
        raise ValueError(f"--num-classes {size['num_classes']} is smaller than the data's {num_classes} classes")
    if (size["in_channels"], size["input_size"]) != (shape[0], shape[-1]):
        raise ValueError(f"data is {shape[0]}x{shape[1]}x{shape[2]} but the config asks for "
                         f"{size['in_channels']}x{size['input_size']}x{size['input_size']}")
    if cfg.model_depth < 1:
        raise ValueError(f"--depth must be >= 1 (got {cfg.model_depth})")
    row = preset_row(cfg.process_name, parse_name(cfg.model)[1])
    run = {name: getattr(row, name) for name in TRAINING_DEFAULTS if getattr(cfg, name) is None}
    preset = Preset(process=cfg.process, depth=cfg.model_depth, row=row, device=str(device))
    terms = {name: TERMS[name].resolve(c, preset) if name in TERMS else c for name, c in cfg.terms.items()}
    spec = dataclasses.replace(cfg, **size, **run, report_to=cfg.report_to or default_reporter(), terms=terms)
    validate(spec)
    return spec


def validate(self: TrainConfig) -> None:
    """A resolved spec: every option in range, every choice known, every float finite; each term checks its own."""
    for config in (self, self.process, self.mix, *self.terms.values()):
        options.check_choices(config)
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
    for name in ("eval_every", "num_workers", "threads", "max_nonfinite_steps", "lr_warmup_steps"):
        if getattr(self, name) is not None and getattr(self, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0 (got {getattr(self, name)})")
    if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
        raise ValueError(f"--lr must be a finite number > 0 (got {self.lr})")
    if self.lr_schedule == "constant" and self.lr_min:
        raise ValueError(f"--lr-min applies to --lr-schedule cosine or linear (constant stays at --lr; got --lr-min "
                         f"{self.lr_min})")
    if self.lr is not None and not (0 <= self.lr_min <= self.lr):  # nan fails both comparisons
        raise ValueError(f"--lr-min must be in [0, --lr {self.lr}] (got {self.lr_min})")
    if self.init_from is not None and not self.init_from:
        raise ValueError("--init-from '' names no file; give a run folder, checkpoint or export, or leave it out")
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
    for name, config in self.terms.items():
        TERMS[name].validate(config, self)
    for config in (self, self.process, self.mix, *self.terms.values()):
        options.check_finite(config)  # every other float option (--mask-ratio 0.5 nan, ...): nan/inf refused
    if hasattr(self.process, "validate"):
        self.process.validate()
    self.mix.validate()


# Fields that may change between a run and its resumption (they do not change the math).
RESUMABLE_CHANGES = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("resumable")}


def check_run_name(name: str) -> None:
    """--exp-name is a relative path that stays inside --output-dir: no '..', not absolute, no empty or overlong
    part (most file systems take 255 bytes per name), and no control or format characters (a newline, an escape
    sequence, a right-to-left mark: the messages that quote the name would print them to the terminal)."""
    hidden = next((c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")), None)
    if hidden is not None:
        raise ValueError(f"--exp-name {name!r} holds the control character U+{ord(hidden):04X}; use printable "
                         "characters")
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
