"""`sra prepare`: flags -> PrepareConfig -> sra.data.prepare.prepare."""
from __future__ import annotations

import argparse
import dataclasses
import json

from . import HelpFormatter


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "prepare", help="encode an image folder into a latent store with the SD-VAE (ADM center crop)",
        description="Center-crop images as ADM does, encode them with an AutoencoderKL and store the posterior mean "
                    "and std (float16) in one memory-mapped array that `sra train --data-dir OUT` reads. Running the "
                    "same command again resumes; under torchrun every rank encodes a share.",
        formatter_class=HelpFormatter)
    p.add_argument("src", help="ImageNet-style folder (SRC/<class>/<image>) or a list file of `PATH [LABEL]` lines")
    p.add_argument("out", help="output store folder (created; an interrupted store of the same settings resumes)")
    p.add_argument("--resolution", type=int, default=256, help="image side in pixels after the crop (256 or 512 in "
                   "the paper; a multiple of the VAE's downsampling, 8 for the SD-VAE)")
    p.add_argument("--vae", default="stabilityai/sd-vae-ft-ema",
                   help="AutoencoderKL: local folder, or hub name already in the Hugging Face cache (no download)")
    p.add_argument("--flip", action="store_true", help="also store each image's horizontal mirror (doubles the store)")
    p.add_argument("--normalize", default="scale", choices=["scale", "channel"],
                   help="latent scaling the store asks for at training time: x 0.18215 or per-channel mean/std")
    p.add_argument("--batch-size", type=int, default=64, help="images per VAE forward, per rank")
    p.add_argument("--chunk-size", type=int, default=1024, help="images per commit: the unit of resumption")
    p.add_argument("--num-workers", type=int, default=4, help="image decoding processes per rank")
    p.add_argument("--encoder", default=None, metavar="DIR",
                   help="REPA encoder: a local DINOv2 folder (transformers) or 'fmnist'; its patch features of every "
                        "image are stored too (float16, tokens x dim per image), so REPA training runs no encoder")
    p.add_argument("--encoder-grid", type=int, default=0, help="side of the encoder's token grid: the model's "
                   "(latent side / patch size); 0 = latent side / 2, the grid of the */2 models")
    p.add_argument("--max-chunks", type=int, default=None, help="stop after this many chunks per rank (resume later)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    return p


def run(args) -> int:
    from ..data.prepare import PrepareConfig, prepare
    from ..runfolder import check_output, writing

    check_output(args.out, "output store")
    cfg = PrepareConfig(src=args.src, out=args.out, resolution=args.resolution, vae=args.vae, flip=args.flip,
                        normalize=args.normalize, batch_size=args.batch_size, chunk_size=args.chunk_size,
                        num_workers=args.num_workers, max_chunks=args.max_chunks, progress=args.progress,
                        encoder=args.encoder, encoder_grid=args.encoder_grid)
    if args.dry_run:
        cfg.validate()
        print(json.dumps(dataclasses.asdict(cfg), indent=2))
        return 0
    with writing(args.out):  # a read-only or full file system: one line naming the file
        summary = prepare(cfg)  # one line per rank under torchrun
    print(json.dumps({k: (round(v, 1) if isinstance(v, float) else v) for k, v in summary.items()}))
    return 0
