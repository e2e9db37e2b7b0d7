"""Build a model for sampling/analysis from a run folder, one of our checkpoints or exports, an authors' released
checkpoint, or a plain state dict: the architecture is read off the weights' shapes, so no flags are needed. The
process comes from the run's spec (its `process` section); only files that carry no spec (the authors' released
checkpoints, plain state dicts) have it decided from their weights and saved arguments, in `process_of_weights`.

Nothing read from a file builds a module unchecked: `check_architecture` refuses, in one line naming the file and the
key, any architecture (from a config or from the shapes) that is malformed or too large to build, a run spec that
disagrees with its weights is refused (`check_spec`), and so are weights that are not floating point or not finite
(`check_weights`)."""
from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, load_weights, model_state
from .dit import Block, DiffusionTransformer
from .presets import FAMILIES, MODEL_NAMES, SIZES, architecture as preset_architecture

TRAINING_ONLY = ("projectors.",)  # REPA's projectors in REPA-trained released files: not part of the backbone
# The authors' released files are SiT-SRA's (velocity) or DiT-SRA's (epsilon and learned variance): which one a file
# is, its output layout tells (a fixed map of the released formats, not an inverse of the family table).
RELEASED_FAMILY = {False: "SiT", True: "DiT"}


@dataclass
class LoadedModel:
    model: DiffusionTransformer           # in eval mode, EMA weights unless asked otherwise
    process: dict                         # the spec's process section, e.g. {"name": "flow", "path": "linear", ...}
    config: dict | None                   # our resolved run spec as a dict, when the checkpoint has one
    source: Path                          # the checkpoint file read
    step: int | None                      # training step of our checkpoints
    released_args: dict | None = None     # vars() of the argparse.Namespace under 'args' in the authors' files


def process_of_weights(learn_sigma: bool, released_args: dict | None) -> dict:
    """The process section of a file that carries no spec: DDPM for learned-variance outputs (DiT), else flow
    matching with the released args' --path-type (SiT's train.py spells the cosine path "cos") and velocity
    prediction. The one place weight shapes decide the process."""
    section = {"name": FAMILIES[RELEASED_FAMILY[learn_sigma]].process}
    if not learn_sigma:
        path = (released_args or {}).get("path_type") or "linear"
        section["path"] = {"cos": "cosine"}.get(path, path)
    return section


# ----------------------------------------------------------------------------------------------------------------
# Architectures read from files
# ----------------------------------------------------------------------------------------------------------------

# DiffusionTransformer's constructor arguments and their types: an architecture read from a file has each of them
ARCHITECTURE = {"input_size": int, "patch_size": int, "in_channels": int, "num_heads": int, "hidden_size": int,
                "depth": int, "num_classes": int, "mlp_ratio": float, "class_dropout_prob": float, "learn_sigma": bool}
MAX_SIZE = 2 ** 31 - 1  # no tensor dimension is larger (and the products below stay exact)
MAX_PARAMETERS = 20 * 10 ** 9  # 30x SiT-XL/2 (675 M); a tampered width or depth is refused before memory is taken
BLOCK_KEYS = tuple(Block(4, 1).state_dict())  # what every block of a state dict holds: blocks.N.<key>


def parameter_count(a: dict) -> int:
    """DiffusionTransformer(**a)'s parameter count, from the numbers alone (layer by layer as dit.py builds them)."""
    d, p, c = a["hidden_size"], a["patch_size"], a["in_channels"]
    mlp = int(d * a["mlp_ratio"])
    out = p * p * c * (2 if a["learn_sigma"] else 1)
    labels = a["num_classes"] + int(a["class_dropout_prob"] > 0)
    block = (3 * d * d + 3 * d) + (d * d + d) + (d * mlp + mlp) + (mlp * d + d) + (6 * d * d + 6 * d)
    return ((c * p * p * d + d) + (256 * d + d + d * d + d) + labels * d + (a["input_size"] // p) ** 2 * d
            + a["depth"] * block + (2 * d * d + 2 * d + 2 * d * d + d) + (2 * d * d + 2 * d + d * out + out))


def check_architecture(arch, source: str, names: dict | None = None) -> dict:
    """`arch` if DiffusionTransformer(**arch) can be built, else one CheckpointError line naming `source` (the file it
    was read from) and the key: a dict of exactly ARCHITECTURE's keys and types, sizes in 1..MAX_SIZE, num_heads
    dividing hidden_size (a multiple of 4, for the 2-D sin-cos positions), patch_size dividing input_size, a finite
    positive MLP ratio, class dropout in [0, 1), and at most MAX_PARAMETERS parameters. `names`: how the file spells
    a key, for the message (a diffusers config's)."""
    def fail(key: str, problem: str):
        raise CheckpointError(f"{source}: {(names or {}).get(key, key)} {problem}; the file is damaged or not a "
                              "SiT/DiT model")

    if not isinstance(arch, dict):
        raise CheckpointError(f"{source}: the architecture is missing or not an object (got {arch!r:.60})")
    for key in arch:
        if key not in ARCHITECTURE:
            fail(repr(key), f"is not an architecture key (known: {', '.join(ARCHITECTURE)})")
    for key, kind in ARCHITECTURE.items():
        if key not in arch:
            fail(key, "is missing")
        v = arch[key]
        if kind is bool and type(v) is not bool:
            fail(key, f"must be true or false (got {v!r:.60})")
        if kind is int and (type(v) is not int or not 1 <= v <= MAX_SIZE):
            fail(key, f"must be an integer in 1..{MAX_SIZE} (got {v!r:.60})")
        if kind is float and (type(v) not in (int, float) or not math.isfinite(v) or v < 0):
            fail(key, f"must be a finite number >= 0 (got {v!r:.60})")
    a = arch
    if a["hidden_size"] % a["num_heads"]:
        fail("num_heads", f"{a['num_heads']} does not divide hidden_size {a['hidden_size']}")
    if a["hidden_size"] % 4:
        fail("hidden_size", f"{a['hidden_size']} is not a multiple of 4 (the 2-D sin-cos position embedding)")
    if a["input_size"] % a["patch_size"]:
        fail("patch_size", f"{a['patch_size']} does not divide input_size {a['input_size']}")
    if not 1 <= a["hidden_size"] * a["mlp_ratio"] <= MAX_SIZE:
        fail("mlp_ratio", f"{a['mlp_ratio']!r} at hidden_size {a['hidden_size']} gives an MLP width outside "
                          f"1..{MAX_SIZE}")
    if a["class_dropout_prob"] >= 1:
        fail("class_dropout_prob", f"must be below 1 (got {a['class_dropout_prob']!r})")
    n = parameter_count(a)
    if n > MAX_PARAMETERS:
        fail("hidden_size", f"{a['hidden_size']} with depth {a['depth']} makes {n / 1e9:.3g} billion parameters, "
                            f"over the {MAX_PARAMETERS / 1e9:.0f} billion sra builds")
    return arch


def check_spec(arch: dict, spec: dict | None, source: str, model_source: str) -> None:
    """A run spec (`source`) that says what the model is (its preset, depth, input size, channels, classes) must say
    what the weights (`model_source`) are: a config.json of another run beside a checkpoint is refused, not sampled
    with."""
    if not isinstance(spec, dict):
        return
    said = preset_architecture(spec["model"]) if spec.get("model") in MODEL_NAMES else {}
    said.update({k: spec[k] for k in ("depth", "input_size", "in_channels", "num_classes") if spec.get(k) is not None})
    for key, value in said.items():
        if value != arch[key]:
            raise CheckpointError(f"{source} says {key} {value!r}, but {model_source} holds a model with "
                                  f"{arch[key]!r}; the config belongs to another model")


def check_weights(state: dict, model: DiffusionTransformer, source: str, allow_nonfinite: bool = False) -> None:
    """Weights to sample with: every tensor the model holds as floating point (all of them: it has no integer buffers)
    must be floating point and, unless `allow_nonfinite`, finite; one line naming the file and the first bad key."""
    own = model.state_dict()
    for key, value in state.items():
        if key not in own or not own[key].is_floating_point():
            continue  # an unexpected key: load_weights names it
        if not value.is_floating_point():
            raise CheckpointError(f"{source}: {key} is {value.dtype}, not floating point; the file is damaged or not "
                                  "a model's weights")
        if not allow_nonfinite and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{source}: {key} holds NaN or infinite values (a diverged run?); "
                                  "load_model(..., allow_nonfinite=True) loads them anyway")


def read_json(path: Path, text: str | None = None):
    """The JSON of a config file (or `text` read from `path`, e.g. a file's metadata); one line when it is not JSON."""
    try:
        return json.loads(path.read_text() if text is None else text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not readable JSON ({e})") from None


def shapes_of(file: Path) -> str:
    """Where an architecture read off the weights came from, for messages."""
    return f"{file} (the architecture its weights' shapes give)"


def architecture_from_state(state: dict) -> dict:
    """Constructor arguments of DiffusionTransformer that reproduce a state dict's shapes. The depth counts the blocks
    0, 1, ... that hold a whole block's weights, so a stray key (blocks.1000000.foo) never makes a deeper model (it is
    an unexpected key when the weights are loaded)."""
    try:
        w = state["x_embedder.proj.weight"]  # (D, C, p, p)
        hidden, in_channels, patch = w.shape[0], w.shape[1], w.shape[2]
        tokens = state["pos_embed"].shape[1]
        depth = 0
        while all(f"blocks.{depth}.{k}" in state for k in BLOCK_KEYS):
            depth += 1
        table = state["y_embedder.embedding_table.weight"].shape[0]
        out = state["final_layer.linear.weight"].shape[0] // (patch * patch)
        mlp_hidden = state["blocks.0.mlp.fc1.weight"].shape[0]
    except (KeyError, ValueError, IndexError, AttributeError) as e:
        raise ValueError(f"state dict is not a SiT/DiT checkpoint (missing {e})") from None
    heads = next((h for d, w_, h in SIZES.values() if w_ == hidden), max(1, hidden // 64))
    return dict(input_size=int(round(tokens ** 0.5)) * patch, patch_size=patch, in_channels=in_channels,
                hidden_size=hidden, depth=depth, num_heads=heads, mlp_ratio=mlp_hidden / hidden,
                num_classes=table - 1, class_dropout_prob=0.1, learn_sigma=out == 2 * in_channels)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A run folder -> its latest checkpoint; an `sra export` folder -> its model.safetensors; a file -> itself."""
    path = Path(path)
    if path.is_dir() and (path / "model.safetensors").is_file():
        return path / "model.safetensors"
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise CheckpointError(f"run folder {path} holds no checkpoint")
        return found
    if not path.exists():
        raise CheckpointError(f"{path} is neither a run folder nor a checkpoint file")
    return path


def load_model(path: str | os.PathLike, weights: str = "ema", num_heads: int | None = None,
               device: str | torch.device = "cpu", *, allow_nonfinite: bool = False) -> LoadedModel:
    """Load for inference. `weights`: 'ema' (default) or 'model'. `num_heads` overrides the guess from the width.
    Also reads `sra export --format safetensors` output (its weights are the EMA ones). The architecture, the run
    spec against it and the weights are checked before they are used (one CheckpointError line each); weights with
    NaN or infinite values load only with `allow_nonfinite`."""
    file = resolve_checkpoint(path)
    args = None
    if file.suffix == ".safetensors":
        state, arch, config, step, process, arch_source = read_safetensors(file)
        config_source = arch_source
    else:
        ckpt = load_checkpoint(file)
        state = model_state(ckpt, prefer=weights)
        config, config_source = (ckpt.get("config"), file) if isinstance(ckpt.get("config"), dict) else (None, None)
        if config is None and (file.parent.parent / "config.json").exists():
            config_source = file.parent.parent / "config.json"
            config = read_json(config_source)
        step = ckpt.get("step", ckpt.get("steps"))
        args = vars(ckpt["args"]) if isinstance(ckpt.get("args"), argparse.Namespace) else None
        if config is None:  # released files (REPA-trained ones hold REPA's projectors beside the backbone)
            state = {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY)}
        arch, arch_source = architecture_from_state(state), shapes_of(file)
        process = None
    if num_heads:
        arch["num_heads"] = num_heads
    check_architecture(arch, arch_source)
    check_spec(arch, config, str(config_source), str(file))
    if process is None:
        process = spec_process(config) or process_of_weights(arch["learn_sigma"], args)
    model = DiffusionTransformer(**arch)
    check_weights(state, model, str(file), allow_nonfinite)
    load_weights(model, state, source=str(file))
    return LoadedModel(model.to(device).eval(), process, config, file, int(step) if step is not None else None, args)


LEGACY_SECTION = "flow"  # where specs written before the `process` section kept SiT's path and training times


def spec_process(config: dict | None, model: str | None = None) -> dict | None:
    """The process section of a run spec (a copy; it may lack a name, which is then the preset's default). A spec
    written before the section existed has a `flow` section instead, read as the model family's process with those
    settings (`model`: the preset, when the spec does not name it)."""
    if not isinstance(config, dict):
        return None
    if "process" in config:
        return dict(config["process"]) if isinstance(config["process"], dict) else config["process"]
    model = config.get("model", model)
    if LEGACY_SECTION not in config or not isinstance(model, str) or model.split("-")[0] not in FAMILIES:
        return None
    family = FAMILIES[model.split("-")[0]]
    return {"name": family.process, **({} if family.learn_sigma else dict(config.get(LEGACY_SECTION) or {}))}


def read_safetensors(file: Path) -> tuple[dict, dict, dict | None, int | None, dict | None, str]:
    """(state, architecture, run spec, step, process section, where the architecture was read) of an `sra export
    --format safetensors` file: the architecture and process come from the JSON config in the file's metadata (or
    beside it), else from the shapes."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        state = load_file(str(file))
        with safe_open(str(file), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"cannot read {file}: {str(e).splitlines()[0]}") from None
    source, config = f"{file} (its sra_config metadata)", None
    if "sra_config" in meta:
        config = read_json(file, meta["sra_config"])
    elif (file.parent / "config.json").is_file():
        source, config = str(file.parent / "config.json"), read_json(file.parent / "config.json")
    if not (isinstance(config, dict) and config.get("format") == "sra"):
        return state, architecture_from_state(state), None, None, None, shapes_of(file)
    spec = config.get("train_config")
    process = config.get("process") if isinstance(config.get("process"), dict) else spec_process(spec)
    arch = config.get("architecture")
    return state, dict(arch) if isinstance(arch, dict) else arch, spec, config.get("step"), process, source
