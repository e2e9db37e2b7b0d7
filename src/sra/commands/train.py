"""`sra train`: preset <- config file <- flags -> TrainConfig -> sra.train.train. The flags come from the TrainConfig
fields themselves (`sra.options`), so an option is declared once."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import yaml


def add_parser(sub) -> argparse.ArgumentParser:
    from .. import options
    from ..train import TrainConfig

    p = sub.add_parser(
        "train", help="train a SiT/DiT with SRA (no flags: a tiny SiT+SRA on Fashion-MNIST, ~10 min on a CPU)",
        description="Train a diffusion transformer with Self-Representation Alignment. With no flags: a tiny SiT+SRA "
                    "on Fashion-MNIST (digits if absent) on the CPU. Running the same command again resumes. Options "
                    "combine as: --preset, then --config FILE, then the flags actually given.")
    g = p.add_argument_group("recipes and config files")
    g.add_argument("--preset", default=None, metavar="NAME", help="start from a named recipe of the paper "
                   "(see --list-presets)")
    g.add_argument("--config", default=None, metavar="FILE", help="YAML or JSON config (nested like a run's "
                   "config.json, which is accepted as is; partial files keep the defaults); flags given override it")
    g.add_argument("--list-presets", action="store_true", help="print the named recipes with their sources and exit")
    g.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    options.add_arguments(p, TrainConfig())
    return p


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


def config_from_args(args):
    """The TrainConfig of a parsed command line: defaults, then the preset, then the file, then the given flags."""
    from .. import options
    from ..train import TrainConfig
    from ..train.recipes import recipe

    d = {}
    if args.preset is not None:  # '' is an unknown recipe, not "none"
        d = options.merge(d, recipe(args.preset).config)
    if args.config:
        d = options.merge(d, load_config_file(args.config))
    flags = options.given(args, TrainConfig)
    d = options.merge(d, flags)
    cfg = TrainConfig.from_dict(d)
    if flags.get("flow") and "flow" not in cfg.process.config_sections:  # DDPM: a recorded --path-type means nothing
        raise ValueError(f"--path-type and --weighting apply to SiT models only, not {cfg.model}")
    if args.preset and recipe(args.preset).data and cfg.data_dir is None:
        raise ValueError(f"--preset {args.preset} needs --data-dir: a {recipe(args.preset).data}")
    return cfg


def run(args) -> int:
    if args.list_presets:
        from ..train import TrainConfig
        from ..train.recipes import list_recipes
        print(list_recipes(TrainConfig))
        return 0
    import torch

    from ..data import load_dataset
    from ..data.sources import default_data_dir
    from ..train import train

    cfg = config_from_args(args)
    if args.dry_run:  # the real run's checks, before any folder is touched
        ds = load_dataset(cfg.data_dir)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        resolved = cfg.resolve(ds.shape, ds.num_classes, device)
        resolved.check_fits(len(ds), int(os.environ.get("WORLD_SIZE", "1")))
        shown = resolved.to_dict()
        shown["data_dir"] = shown["data_dir"] or default_data_dir()  # the data it will use, not null (same run)
        print(json.dumps(shown, indent=2))
        return 0
    run_dir = train(cfg)
    from ..distributed import current
    from ..train.summary import run_summary
    if current().is_main:
        print("\n".join(run_summary(run_dir, cfg.data_dir)), flush=True)
    return 0
