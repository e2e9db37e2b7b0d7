"""`sra generate`: N images as PNGs plus one ADM-format .npz, per-image seeds, resumable, under torchrun or alone."""
from __future__ import annotations

import argparse

from .sample import PROTOCOL_NOTE, add_model_flags, add_sampler_flags, class_list, options_from_args


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "generate", help="generate N images (PNGs + ADM .npz) for FID evaluation",
        description="Generate images 0..N-1 as PNGs in OUTPUT_DIR and OUTPUT_DIR/samples.npz (arr_0: uint8 N x H x W "
                    "x 3, the ADM evaluation format). Each image depends only on (seed, index), not on batch size or "
                    "process count. Running the same command again skips images already written. Launch with "
                    "`torchrun --nproc_per_node=K -m sra generate ...` to share the work. " + PROTOCOL_NOTE)
    add_model_flags(p)
    add_sampler_flags(p)
    g = p.add_argument_group("output")
    g.add_argument("--output-dir", required=True, help="folder for the PNGs, manifest.json and samples.npz")
    g.add_argument("--num-images", type=int, default=50_000, help="number of images (default 50,000, as FID-50K)")
    g.add_argument("--batch-size", type=int, default=32, help="images per forward batch per process")
    g.add_argument("--classes", type=class_list, default=None, metavar="C,C,...",
                   help="image i gets class C[i mod len] (default: uniformly random labels, per image)")
    g.add_argument("--no-npz", dest="npz", action="store_false", help="write the PNGs only")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    return p


def run(args) -> int:
    import torch

    from .. import distributed
    from ..generate import generate
    from ..runfolder import check_output

    check_output(args.output_dir, "--output-dir")  # its lock and clean-up once hit a training run's checkpoints

    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    try:
        result = generate(args.checkpoint, args.output_dir, num_images=args.num_images, seed=args.seed,
                          batch_size=args.batch_size, options=options_from_args(args), classes=args.classes,
                          model_name=args.model, input_size=args.input_size, weights=args.weights,
                          latent_store=args.latent_store, vae=args.vae, npz=args.npz, progress=args.progress)
        rate = result.generated / result.seconds if result.seconds > 0 else float("nan")
        line = f"{args.output_dir}: {result.generated} new images in {result.seconds:.1f} s ({rate:.2f} images/s"
        if result.generated:  # what the paper's protocol (50,000 images) costs at this rate, per process
            per_process = rate / distributed.current().world_size
            line += f"; 50,000 images: {50_000 / per_process / 3600:.2f} h on one process at this rate"
        distributed.print0(line + ")")
    finally:
        distributed.shutdown()
    return 0
