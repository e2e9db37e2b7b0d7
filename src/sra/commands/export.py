"""`sra export RUN_OR_CKPT --format safetensors|diffusers`: the EMA weights for other tools."""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export", help="export a run's EMA weights as safetensors (+ JSON config) or a diffusers DiT model",
        description="Export the EMA weights of a run folder or checkpoint (ours or the authors' released files). "
                    "safetensors: OUTPUT/model.safetensors + OUTPUT/config.json, which sra's load_model (and "
                    "`sra sample`/`generate`) read back. diffusers (DiT models only): a DiTTransformer2DModel folder; "
                    "load it with sra.models.export.load_diffusers_dit, which sets the time projection's "
                    "downscale_freq_shift to 0 as DiT uses (plain from_pretrained keeps diffusers' 1).")
    p.add_argument("checkpoint", metavar="RUN_OR_CKPT", help="run folder (its latest checkpoint) or checkpoint file")
    p.add_argument("--format", default="safetensors", choices=["safetensors", "diffusers"], help="output format "
                   "(default: safetensors)")
    p.add_argument("--weights", default="ema", choices=["ema", "model"], help="which weights (default: ema)")
    p.add_argument("--output", default=None, help="output folder (default: RUN/export-FORMAT for a run folder, "
                   "CKPT-FORMAT beside a checkpoint file)")
    return p


def run(args) -> int:
    from ..models import load_model
    from ..models.export import export_diffusers, export_safetensors
    from ..runfolder import check_output, writing

    src = Path(args.checkpoint)
    output = args.output or (src / f"export-{args.format}" if src.is_dir() else src.parent / f"{src.stem}-{args.format}")
    check_output(output, "--output")  # an export into RUN replaced the run's config.json
    loaded = load_model(args.checkpoint, weights=args.weights)
    export = export_safetensors if args.format == "safetensors" else export_diffusers
    with writing(output):  # a read-only or full file system: one line naming the file
        print(export(loaded, output))
    return 0
