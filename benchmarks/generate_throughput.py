"""Images per second of `sra generate` (sra.generate.generate) for a preset with random weights; prints one JSON line.

    .venv/bin/python benchmarks/generate_throughput.py                       # SiT-T/4, 32 px, 1 channel, CPU
    .venv/bin/python benchmarks/generate_throughput.py --model SiT-XL/2 --input-size 32 --in-channels 4 \\
        --num-images 256 --batch-size 128                                    # the paper's model, on a GPU

The sampler is the authors' protocol unless overridden (SDE, 250 steps, CFG 1.8 in [0, 0.7]); random weights cost the
same as trained ones. Latent presets (4 channels) time sampling and the uint8 conversion only (no VAE decoding, no PNGs),
since no VAE is at hand here; pixel presets run generate() end to end (PNGs and the .npz included).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="SiT-T/4", help="preset")
    p.add_argument("--input-size", type=int, default=32, help="model input side (pixels or latents)")
    p.add_argument("--in-channels", type=int, default=1, help="1 or 3: pixels; 4: SD-VAE latents")
    p.add_argument("--num-classes", type=int, default=10, help="classes")
    p.add_argument("--num-images", type=int, default=32, help="images to generate (after one warm-up batch)")
    p.add_argument("--batch-size", type=int, default=32, help="images per batch")
    p.add_argument("--steps", type=int, default=250, help="sampler steps")
    p.add_argument("--mode", default=None, help="ode | sde (SiT), ddpm | ddim (DiT); default: protocol")
    p.add_argument("--cfg-scale", type=float, default=None, help="guidance scale (default: protocol)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args()

    import sra
    from sra.data.grid import to_uint8
    from sra.generate import SamplerOptions, generate, image_labels, load_for_sampling, process_of, sample_images

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = True  # as the authors sample on GPUs
    device = "cuda" if torch.cuda.is_available() else "cpu"
    opts = SamplerOptions(mode=args.mode, num_steps=args.steps, cfg_scale=args.cfg_scale)
    with tempfile.TemporaryDirectory() as tmp:
        model = sra.build_model(args.model, input_size=args.input_size, in_channels=args.in_channels,
                                num_classes=args.num_classes)
        ckpt = Path(tmp) / "model.pt"
        torch.save({"ema": model.state_dict()}, ckpt)
        del model
        if args.in_channels in (1, 3):
            generate(ckpt, Path(tmp) / "warm", num_images=min(args.batch_size, 4), batch_size=args.batch_size,
                     options=opts, npz=False, progress=False)
            start = time.perf_counter()
            generate(ckpt, Path(tmp) / "out", num_images=args.num_images, batch_size=args.batch_size, options=opts,
                     progress=False)
            seconds, what = time.perf_counter() - start, "generate() end to end: sampling, PNGs, .npz"
        else:
            loaded = load_for_sampling(ckpt, device=device)
            process = process_of(loaded)
            resolved = opts.resolve(process)
            batches = [range(i, min(i + args.batch_size, args.num_images))
                       for i in range(0, args.num_images, args.batch_size)]

            def one(idx):
                y = image_labels(0, idx, args.num_classes)
                return to_uint8(sample_images(loaded, process, resolved, 0, idx, y, lambda x: x))

            one(batches[0])  # warm-up
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for idx in batches:
                one(idx)
            seconds, what = time.perf_counter() - start, "sampling in latent space (no VAE decoding)"
        resolved = opts.resolve(process_of(load_for_sampling(ckpt)))
    print(json.dumps(dict(
        benchmark="generate_throughput", model=args.model, input_size=args.input_size, in_channels=args.in_channels,
        num_images=args.num_images, batch_size=args.batch_size, mode=resolved.mode, steps=resolved.num_steps,
        cfg_scale=resolved.cfg_scale, guidance=[resolved.guidance_low, resolved.guidance_high], device=device,
        device_name=torch.cuda.get_device_name() if device == "cuda" else "cpu", threads=torch.get_num_threads(),
        measured=what, seconds=round(seconds, 2), images_per_s=round(args.num_images / seconds, 3))))


if __name__ == "__main__":
    main()
