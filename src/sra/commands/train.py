"""`sra train`: preset <- config file <- flags -> `resolve_spec` (the run spec, once) -> sra.train.loop.train. The
flags come from the spec's fields and from the config dataclasses of the processes and registered terms
(`sra.options`), so an option is declared once."""
from __future__ import annotations

import argparse
import json
import os


def add_parser(sub) -> argparse.ArgumentParser:
    from ..train import config

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
    config.add_arguments(p)
    return p


def spec_from_args(args):
    """(run spec, dataset) of a parsed command line: the defaults, then the preset, then the file, then the given
    flags, resolved once by `resolve_spec` against the data and this machine's device."""
    import torch

    from ..train import config

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return config.resolve_spec(config.given(args), preset=args.preset, config_file=args.config, device=device,
                               world_size=int(os.environ.get("WORLD_SIZE", "1")))


def run(args) -> int:
    if args.list_presets:
        from ..train.config import option_fields
        from ..train.recipes import list_recipes
        print(list_recipes(option_fields()))
        return 0
    from ..data.sources import default_data_dir
    from ..train.loop import train
    from ..train.warmstart import read_init

    spec, dataset = spec_from_args(args)
    if args.dry_run:  # the real run's checks, before any folder is touched
        read_init(spec)  # --init-from's file fits the model (skipped, as in the run, when the folder resumes)
        shown = spec.to_dict()
        shown["data_dir"] = shown["data_dir"] or default_data_dir()  # the data it will use, not null (same run)
        print(json.dumps(shown, indent=2))
        return 0
    run_dir = train(spec, dataset)
    from ..distributed import current
    from ..train.summary import run_summary
    if current().is_main:
        print("\n".join(run_summary(run_dir, spec.data_dir)), flush=True)
    return 0
