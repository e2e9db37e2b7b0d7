"""`sra sample`: a PNG grid from a run folder or checkpoint. The sampler flags are shared with `sra generate`."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from .. import options
from ..generate import SamplerOptions

MAX_GRID = 1024  # images in one `sra sample` grid (all are sampled in one batch and held in memory)
PROTOCOL_NOTE = ("Defaults reproduce the authors' evaluation protocol: SiT: SDE, 250 steps, CFG 1.8 in the guidance "
                 "interval [0, 0.7] (SRA/REPA, ImageNet 256 px); DiT: 250 respaced DDPM steps, CFG 1.5 on epsilon "
                 "channels 0-2 (DiT's forward_with_cfg).")


def class_list(text: str) -> list[int]:
    """'0,3,5' -> [0, 3, 5] (an empty list is refused later, with the model's class count at hand)."""
    try:
        return [int(c) for c in text.replace(" ", "").split(",") if c != ""]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated class indices, got {text!r}") from None


def add_model_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("checkpoint", help="run folder (its latest checkpoint), one of our .pt checkpoints, an authors' "
                   "released .pt, or a plain state dict")
    g.add_argument("--weights", default="ema", choices=["ema", "model"],
                   help="which weights of a training checkpoint (default: ema)")
    g.add_argument("--model", default=None, metavar="NAME",
                   help="expected preset (e.g. SiT-XL/2); refuse a checkpoint of another one (default: no check)")
    g.add_argument("--input-size", type=int, default=None,
                   help="expected model input side in pixels or latents (32 for 256 px SD-VAE); refuse others")
    g.add_argument("--latent-store", default=None, help="`sra prepare` folder whose VAE and scaling decode latent "
                   "samples (default: the run's data_dir; not needed for pixel models)")
    g.add_argument("--vae", default=None, metavar="DIR", help="VAE that decodes latent samples: a diffusers "
                   "AutoencoderKL folder, or a repo id found in the local Hugging Face cache; nothing downloads "
                   "(default: $SRA_VAE, else the latent store's, else stabilityai/sd-vae-ft-ema from the cache as the "
                   "authors' generate.py; released checkpoints need no store: latents = 0.18215 x VAE latents)")
    g.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True,
                   help="TF32 matmuls on NVIDIA GPUs (the authors sample so: faster, ~1e-3 relative differences)")


def add_sampler_flags(p: argparse.ArgumentParser) -> None:
    g = options.add_arguments(p, SamplerOptions())
    g.add_argument("--seed", type=int, default=0, help="seed; image i's label and noise depend only on (seed, i)")


def options_from_args(args) -> SamplerOptions:
    return options.from_dict(SamplerOptions, options.given(args, SamplerOptions))


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("sample", help="sample a PNG grid from a run folder or checkpoint",
                       description="Sample a PNG grid of images from a trained model. " + PROTOCOL_NOTE)
    add_model_flags(p)
    add_sampler_flags(p)
    g = p.add_argument_group("grid")
    g.add_argument("--classes", type=class_list, default=None, metavar="C,C,...",
                   help="class indices, one grid row each (default: random labels)")
    g.add_argument("--per-class", type=int, default=8, help="images per class row with --classes")
    g.add_argument("--num-images", type=int, default=16, help="images without --classes (random labels)")
    g.add_argument("--output", default="sample.png", help="PNG file to write")
    g.add_argument("--scale", type=int, default=0, help="nearest-neighbour upscaling factor (0: up to ~128 px)")
    g.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    return p


def run(args) -> int:
    import torch

    from ..data.grid import save_grid
    from ..generate import (check_classes, image_labels, load_for_sampling, make_decoder, process_of, sample_images,
                            sampler_line)
    from ..runfolder import check_output, check_writable

    check_output(args.output, "--output")  # never into a training run's records (a grid over its checkpoint)
    check_writable(Path(args.output).parent)  # before the sampling, not after it
    count = len(args.classes or []) * args.per_class if args.classes else args.num_images
    if count > MAX_GRID:
        raise ValueError(f"a grid of {count} images is too large (at most {MAX_GRID}); use `sra generate` for many "
                         "images")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    loaded = load_for_sampling(args.checkpoint, model_name=args.model, input_size=args.input_size,
                               weights=args.weights, device=device)
    process = process_of(loaded)  # the process its spec names (x-prediction runs sample as such)
    given = options_from_args(args)
    opts = given.resolve(process)
    classes = check_classes(args.classes, loaded.model.num_classes)
    decode = make_decoder(loaded, args.latent_store, args.vae)
    print(sampler_line(given, opts, loaded, process), flush=True)  # before the sampling: the guidance is not the run's choice
    if classes is not None:
        if args.per_class < 1:
            raise ValueError(f"--per-class must be >= 1 (got {args.per_class})")
        labels, nrow = torch.tensor(classes).repeat_interleave(args.per_class), args.per_class
    else:
        if args.num_images < 1:
            raise ValueError(f"--num-images must be >= 1 (got {args.num_images})")
        labels = image_labels(args.seed, range(args.num_images), loaded.model.num_classes)
        nrow = math.ceil(math.sqrt(args.num_images))
    x = sample_images(loaded, process, opts, args.seed, range(len(labels)), labels, decode)
    save_grid(x, args.output, nrow=nrow, scale=args.scale or max(1, 128 // x.shape[-1]))
    print(f"wrote {args.output} ({len(labels)} images, {opts.mode} {opts.num_steps} steps, cfg {opts.cfg_scale:g})")
    return 0
