"""`sra pca`: the first three principal components of one image's tokens per block and timestep, as an RGB grid."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..runfolder import check_writable, writing
from . import HelpFormatter
from .probe import add_common, load_for_analysis, parse_blocks, parse_times


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "pca", help="PCA maps of one image's tokens per block and timestep (the paper's Fig. 2)",
        description="Noise one image, run it through the model, and show each block's tokens projected on their first "
                    "three principal components as RGB (one PCA per cell; colours are not comparable across cells). "
                    "Rows = timesteps, columns = blocks; the first column shows the noisy input of pixel models.",
        formatter_class=HelpFormatter)
    add_common(p)
    p.add_argument("--image", required=True, help="image file (converted to the model's channels, centre-cropped, "
                   "resized to its input size; e.g. the model's own, from `sra sample RUN --classes C --per-class 1 "
                   "--scale 1`), or for latent models a latent .pt/.npy of shape (C, H, W)")
    p.add_argument("--label", type=int, default=None, help="class label to condition on (default: the null label)")
    p.add_argument("--vae", default=None, help="diffusers AutoencoderKL folder to encode --image for a latent model")
    p.add_argument("--cell-size", type=int, default=96, help="side of each map in the PNG, pixels")
    return p


def run(args) -> int:
    from ..analysis.pca import model_input, pca_maps, render_grid

    loaded, process, device, out = load_for_analysis(args)
    check_writable(out)  # before the work, not after it
    model = loaded.model
    blocks, times = parse_blocks(args.blocks, model.depth), parse_times(args.times)
    if args.cell_size < 8:
        raise ValueError("--cell-size must be at least 8 pixels")
    x0, picture = model_input(model, args.image, args.vae)
    maps, inputs = pca_maps(model, process, x0, times=times, blocks=blocks, label=args.label, seed=args.seed)
    rows = [process.time_label(t) for t in times]
    cols = ["embed" if b == 0 else f"block {b}" for b in blocks]
    file = out / f"pca_{Path(args.image).stem}.png"
    with writing(out):
        size = render_grid(maps, file, row_labels=rows, col_labels=cols, cell=args.cell_size,
                           inputs=inputs if picture is not None and model.in_channels in (1, 3) else None)
    print(f"wrote {file} ({size[0]}x{size[1]}; {len(times)} timesteps x {len(blocks)} blocks, "
          f"{model.input_size // model.patch_size}x{model.input_size // model.patch_size} tokens each)")
    return 0
