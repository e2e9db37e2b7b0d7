"""`sra prepare`: flags (the PrepareConfig fields, declared once) -> PrepareConfig -> sra.data.prepare.prepare."""
from __future__ import annotations

import argparse
import dataclasses
import json

from . import HelpFormatter
from .. import options
from ..data.prepare import PrepareConfig


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "prepare", help="encode an image folder into a latent store with the SD-VAE (ADM center crop)",
        description="Center-crop images as ADM does, encode them with an AutoencoderKL and store the posterior mean "
                    "and std (float16) in one memory-mapped array that `sra train --data-dir OUT` reads. Running the "
                    "same command again resumes; under torchrun every rank encodes a share.",
        formatter_class=HelpFormatter)
    p.add_argument("src", help="ImageNet-style folder (SRC/<class>/<image>) or a list file of `PATH [LABEL]` lines")
    p.add_argument("out", help="output store folder (created; an interrupted store of the same settings resumes)")
    options.add_arguments(p, PrepareConfig(src="", out=""))
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    return p


def run(args) -> int:
    from ..data.prepare import prepare
    from ..runfolder import check_output, writing

    check_output(args.out, "output store")
    cfg = options.from_dict(PrepareConfig, {"src": args.src, "out": args.out, **options.given(args, PrepareConfig)})
    if args.dry_run:
        cfg.validate()
        print(json.dumps(dataclasses.asdict(cfg), indent=2))
        return 0
    with writing(args.out):  # a read-only or full file system: one line naming the file
        summary = prepare(cfg)  # one line per rank under torchrun
    print(json.dumps({k: (round(v, 1) if isinstance(v, float) else v) for k, v in summary.items()}))
    return 0
