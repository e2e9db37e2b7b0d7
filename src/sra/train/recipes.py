"""Named training recipes (`sra train --preset NAME`): the paper's experiments as partial configs, in the nested
format of config.json. Flags and `--config` files override them; `sra train --list-presets` prints them."""
from __future__ import annotations

from dataclasses import dataclass, field

from .. import options
from ..objectives import TERMS
from .defaults import REPA_DEFAULTS_FROM

# Where the numbers come from: the authors' code as this project's reference index stores it (by commit where the
# index names one): vvvvvjdy/SRA SiT-SRA/train.py @8e779b0 and @1723f85 (the version whose --loss-type defaults to cos,
# "legacy sml1 (only used for reproducing paper results ...)"), DiT-SRA/train.py @51996aa, README.md in its latest stored
# version (news up to 2026-01-26; an earlier one, @66420a4, had the DiT-XL command at blocks 8 -> 20 and a checkpoint
# row of FID 2.06, IS 270.27); sihyun-yu/REPA train.py @2b8c181, whose defaults SRA inherits. The paper's text was not
# available when these were checked: numbers attributed to it are this project's record of the paper (README.md,
# "Defaults follow the paper"), marked "paper, not re-checked".
_TRAIN = "SiT-SRA/ and DiT-SRA/train.py"
_IN256 = {"input_size": 32, "in_channels": 4, "num_classes": 1000, "batch_size": 256, "lr": 1e-4,
          "lr_warmup_steps": 0, "adam_betas": (0.9, 0.999), "weight_decay": 0.0, "max_grad_norm": 1.0,
          "mixed_precision": "fp16", "ema_decay": 0.9999, "ema_warmup": False, "seed": 0, "log_every": 100,
          "sample_every": 10_000, "checkpoint_every": 50_000, "num_workers": 8}
_IN256_FROM = {
    "input_size": f"{_TRAIN} --resolution 256 (default); latent side = resolution // 8",
    "in_channels": f"{_TRAIN}: SD-VAE (sd-vae-ft-ema) latents, 4 channels (latents_scale has 4 entries)",
    "num_classes": f"{_TRAIN} --num-classes 1000 (default)",
    "batch_size": "README.md 5.1/5.2: --batch-size=32 per process on 1 node of 8 GPUs, 'total batch size of 256'; "
                  "REPA train.py --batch-size 256 (global)",
    "lr": f"{_TRAIN} --learning-rate 1e-4 (default)",
    "lr_warmup_steps": f"{_TRAIN}: constant learning rate (get_scheduler is imported, never called)",
    "adam_betas": f"{_TRAIN} --adam-beta1 0.9, --adam-beta2 0.999 (defaults)",
    "weight_decay": f"{_TRAIN} --adam-weight-decay 0 (default)",
    "max_grad_norm": f"{_TRAIN} --max-grad-norm 1.0 (default)",
    "mixed_precision": f"{_TRAIN} --mixed-precision fp16 (default; README.md 5.1/5.2 pass it too)",
    "ema_decay": f"{_TRAIN}: update_ema(ema, model) after every optimizer step, default decay=0.9999",
    "ema_warmup": f"{_TRAIN}: no EMA warm-up (the EMA starts as a copy, update_ema(decay=0))",
    "seed": f"{_TRAIN} --seed 0 (default; README.md passes --seed=0)",
    "log_every": "ours: the released loops send every step to their tracker",
    "sample_every": "REPA train.py --sampling-steps 10000 (default); SiT-SRA/train.py --sample-steps is 100000, "
                    "DiT-SRA samples no grids",
    "checkpoint_every": f"{_TRAIN} --checkpoint-steps 50000 (default; they also save every --checkpoint-epochs 200)",
    "num_workers": f"{_TRAIN} --num-workers 8 (default)",
}
# SiT (flow matching) with the paper's alignment: smooth-L1 (beta 0.05), 2 x 0.1 with the epoch decay, t_max 0.2.
_SIT = {"process": {"path": "linear", "time_sampling": "uniform"},
        "align": {"distance": "sml1", "weight": 0.2, "legacy_epoch_decay": True, "t_max": 0.2,
                  "interval": "uniform"}}
_SIT_FROM = {
    "process.path": "SiT-SRA/train.py --path-type linear (default; README.md 5.1 passes it)",
    "process.time_sampling": "SiT-SRA/train.py --weighting uniform (default; README.md 5.1 passes it)",
    "align.distance": "SiT-SRA/train.py --loss-type sml1, its legacy branch for the paper's results (the default "
                      "is cos since @1723f85); loss.py smooth_l1_loss(..., beta=0.05)",
    "align.weight": "SiT-SRA/train.py: align_loss.mean() * 2 * 0.1 ** 1 up to epoch 149 at --resolution 256",
    "align.legacy_epoch_decay": "SiT-SRA/train.py: * 2 * 0.1 ** ((epoch - 149) / 1000 + 1) after epoch 149 (256 px)",
    "align.t_max": "SiT-SRA/train.py --t-max 0.2 (default; README.md 5.1 passes --t-max=0.2)",
    "align.interval": "SiT-SRA/loss.py: teacher time t - t_max * rand (uniform offset), clamped to [0, 1]",
}
# ImageNet-1k train has 1,281,167 images: 5,004 drop-last steps per epoch at batch 256. The released loops run
# --epochs 801 (epochs 0..800; --max-train-steps 4100000 is never reached) and save epoch-799.pt after 800 epochs.
_EPOCH_STEPS = 1_281_167 // 256
_800_EPOCHS = (f"800 epochs x {_EPOCH_STEPS} steps: {{}} --epochs 801 (default) saves epoch-799.pt, after 800 "
               "epochs, with --checkpoint-epochs 200")
_LATENTS = "latent store of ImageNet at 256 px (`sra prepare IMAGENET/train DIR --resolution 256`)"


@dataclass(frozen=True)
class Recipe:
    summary: str                          # one line: what is trained on what
    source: str                           # the experiment it reproduces and what is known of its result
    config: dict                          # partial TrainConfig dict
    origin: dict = field(default_factory=dict)  # dotted config key -> where that number comes from (file and flag)
    data: str | None = None               # the data it expects; --data-dir must be given when set


RECIPES = {
    "demo": Recipe(
        "tiny SiT-T/4 + SRA (blocks 2 -> 4, cosine, lambda 0.5) on Fashion-MNIST, ~10 min on a CPU",
        "this project's CPU demo (docs/RESULTS.md); the same as `sra train` with no flags", {}),
    "sit-b2-sra-in256": Recipe(
        "SiT-B/2 + SRA on ImageNet 256 latents, 400K steps (~80 epochs)",
        "arXiv 2505.02831 Table 1 (paper, not re-checked): SiT-B/2 + SRA at 400K iterations, "
        "FID 29.10 without guidance (plain SiT-B/2: 33.02)",
        {"model": "SiT-B/2", **_IN256, **_SIT, "max_train_steps": 400_000,
         "align": {**_SIT["align"], "block_out_s": 3, "block_out_t": 8}},
        {**_IN256_FROM, **_SIT_FROM,
         "model": "arXiv 2505.02831 Table 1's SiT-B/2 (paper, not re-checked)",
         "max_train_steps": "REPA train.py --max-train-steps 400000 (default): the 400K-iteration comparison",
         "align.block_out_s": "the paper's SiT-B layers 3 -> 8 (paper, not re-checked); the "
                              "authors' SiT-SRA_DTS_AS/scripts/train.sh trains SiT-B/2 with --block-out-s 3 "
                              "--block-out-t 8; SiT-SRA/train.py defaults are 4 -> 8",
         "align.block_out_t": "as align.block_out_s"},
        data=_LATENTS),
    "sit-xl2-sra-in256": Recipe(
        "SiT-XL/2 + SRA on ImageNet 256 latents, 800 epochs (~4.0M steps)",
        "the authors' SiT-XL/2 run: README.md 5.1's command; README.md 6.1 lists its 800-epoch checkpoint "
        "(sitxl-sra-res256-ep800.pt) at FID-50K 1.58, IS 311.4, sampled with guidance and the guidance interval "
        "(CFG 1.8, SDE 250 steps in the paper's system-level table; paper, not re-checked)",
        {"model": "SiT-XL/2", **_IN256, **_SIT, "max_train_steps": 800 * _EPOCH_STEPS,
         "align": {**_SIT["align"], "block_out_s": 8, "block_out_t": 20}},
        {**_IN256_FROM, **_SIT_FROM,
         "model": "README.md 5.1 --model=\"SiT-XL/2\"",
         "max_train_steps": _800_EPOCHS.format("SiT-SRA/train.py") + "; README.md 6.1: Epochs 800",
         "align.block_out_s": "README.md 5.1 --block-out-s=8",
         "align.block_out_t": "README.md 5.1 --block-out-t=20"},
        data=_LATENTS),
    "dit-xl2-sra-in256": Recipe(
        "DiT-XL/2 + SRA (DDPM, learned sigma) on ImageNet 256 latents, 800 epochs (~4.0M steps)",
        "the authors' DiT-XL/2 run: README.md 5.2's command (exp-name ditxl-ab816-t0.2-res256) with "
        "DiT-SRA/train.py's defaults; its result is in the paper's tables (not re-checked)",
        {"model": "DiT-XL/2", **_IN256, "max_train_steps": 800 * _EPOCH_STEPS,
         "align": {"distance": "sml1", "weight": 0.04, "legacy_epoch_decay": True, "t_max": 0.2,
                   "interval": "uniform", "block_out_s": 8, "block_out_t": 16}},
        {**_IN256_FROM,
         "model": "README.md 5.2 --model=\"DiT-XL/2\"",
         "max_train_steps": _800_EPOCHS.format("DiT-SRA/train.py"),
         "align.distance": "DiT-SRA/train.py --loss-type sml1 (its only choice); diffusion/gaussian_diffusion.py "
                           "training_losses: smooth_l1_loss(..., beta=0.05)",
         "align.weight": "DiT-SRA/train.py: align_loss.mean() * 0.4 * 0.1 ** 1 up to epoch 149 at --resolution 256 "
                         "(SiT's factor is 2)",
         "align.legacy_epoch_decay": "DiT-SRA/train.py: * 0.4 * 0.1 ** ((epoch - 149) / 1000 + 1) after epoch 149",
         "align.t_max": "README.md 5.2 --t-max=0.2 (DiT-SRA/train.py's own default is 0.1); gaussian_diffusion.py "
                        "draws k = randint(0, int(1000 * t_max)), i.e. U{0..199}",
         "align.interval": "DiT-SRA gaussian_diffusion.py: teacher step t - randint(0, 200), clamped to [1, 999]",
         "align.block_out_s": "README.md 5.2 --block-out-s=8 (the paper's DiT-XL layers; README @66420a4 had "
                              "--block-out-t=20 there; DiT-SRA/train.py defaults are 4 -> 8)",
         "align.block_out_t": "README.md 5.2 --block-out-t=16"},
        data=_LATENTS),
}


def recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ValueError(f"unknown preset {name!r}; choices: {', '.join(RECIPES)} (`sra train --list-presets`)")
    return RECIPES[name]


def as_flags(config: dict, fields: dict) -> str:
    """A partial config as the equivalent `sra train` flags (for --list-presets); `fields`: dotted name -> field."""
    return " ".join(_flag(fields[key], value) for key, value in _flatten(config).items())


def _flag(f, value) -> str:
    flag = options.flag_name(f)
    if isinstance(value, bool):
        return flag if value else "--no-" + flag[2:]
    return f"{flag} {' '.join(map(str, value)) if isinstance(value, tuple) else value}"


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def list_recipes(fields: dict) -> str:
    """Every recipe with its flags and where each comes from; `fields`: dotted option name -> field."""
    lines = []
    for name, r in RECIPES.items():
        lines += [f"{name}: {r.summary}", f"  source: {r.source}"]
        if r.data:
            lines.append(f"  data:   --data-dir DIR, a {r.data}")
        lines.append(f"  flags:  {as_flags(r.config, fields) or '(the defaults)'}")
        lines += [f"    {_flag(fields[k], v)}: {r.origin[k]}" for k, v in _flatten(r.config).items()]
    lines.append("REPA's defaults (--repa-weight, --repa-block, --projector-dim), with any preset:")
    lines += [f"    {key}: {why}" for key, why in REPA_DEFAULTS_FROM.items()]
    for name, term in TERMS.items():  # the registered terms that say where their defaults come from
        if getattr(term, "defaults_from", None):
            lines.append(f"{term.title}'s defaults (config section {name}), with any preset:")
            lines += [f"    {_flag(fields[f'{name}.{key}'], getattr(term.unset, key))}: {why}"
                      for key, why in term.defaults_from.items()]
    return "\n".join(lines)
