"""`sra export RUN_OR_CKPT --format safetensors|diffusers`: the EMA weights for other tools."""
from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export", help="export a run's EMA weights as safetensors (+ JSON config) or a diffusers pipeline folder",
        description="Export the EMA weights of a run folder or checkpoint (ours or the authors' released files), "
                    "with a model card (README.md). safetensors: OUTPUT/model.safetensors + OUTPUT/config.json, which "
                    "sra's load_model (and `sra sample`/`generate`) read back. diffusers: DiT models as a folder that "
                    "DiTPipeline.from_pretrained loads as is (DDIM scheduler on the training schedule, the run's VAE; "
                    "latent DiTs only, as DiTPipeline needs a VAE; the card shows the one-line time-projection fix "
                    "diffusers needs); SiT models as a folder with its own pipeline (our ODE/SDE samplers with the "
                    "guidance interval), loaded by DiffusionPipeline.from_pretrained(OUTPUT, trust_remote_code=True).")
    p.add_argument("checkpoint", metavar="RUN_OR_CKPT", help="run folder (its latest checkpoint) or checkpoint file")
    p.add_argument("--format", default="safetensors", choices=["safetensors", "diffusers"], help="output format "
                   "(default: safetensors)")
    p.add_argument("--weights", default="ema", choices=["ema", "model"], help="which weights (default: ema)")
    p.add_argument("--output", default=None, help="output folder (default: RUN/export-FORMAT for a run folder, "
                   "CKPT-FORMAT beside a checkpoint file)")
    p.add_argument("--vae", default=None, metavar="DIR", help="diffusers: the VAE to ship with a latent model (an "
                   "AutoencoderKL folder or a repo id in the local Hugging Face cache; default: as `sra sample`)")
    p.add_argument("--latent-store", default=None, help="diffusers: `sra prepare` folder whose VAE and latent "
                   "scaling a latent model uses (default: the run's data_dir)")
    return p


def run(args) -> int:
    from ..models import load_model
    from ..models.export import export_safetensors
    from ..runfolder import check_output, writing

    src = Path(args.checkpoint)
    output = args.output or (src / f"export-{args.format}" if src.is_dir() else src.parent / f"{src.stem}-{args.format}")
    check_output(output, "--output")  # an export into RUN replaced the run's config.json
    loaded = load_model(args.checkpoint, weights=args.weights)
    export = export_safetensors
    if args.format == "diffusers":  # the VAE and latent map as `sra sample` decodes; the pipeline is the process's
        from ..generate import latent_decoding, process_of

        process = process_of(loaded)
        process.check_diffusers_export()  # before the VAE is loaded: nothing is written for a refused export
        vae, _, latent_map = latent_decoding(loaded, args.latent_store, args.vae)
        export = partial(process.export_diffusers, vae=vae, latent_map=latent_map)
    with writing(output):  # a read-only or full file system: one line naming the file
        print(export(loaded, output))
    return 0
