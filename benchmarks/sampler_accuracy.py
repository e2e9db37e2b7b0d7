"""FD-FMNIST and class accuracy of one Fashion-MNIST checkpoint under several samplers, to tell a model that has not
learned its classes from a sampler that loses them. Each spec is KIND:STEPS:CFG with KIND one of ode (SiT's Euler),
ddim, ddpm or ddim-clip (DDIM with x0 clipped to [-1, 1], as pixel-space DDPM code often samples); CFG 1 is no
guidance. The same noise (seed 0) and balanced labels for every spec.

    python benchmarks/sampler_accuracy.py runs/dit/checkpoints/0001200.pt ddim:30:1 ddpm:100:1 ddim:30:3 ddim-clip:30:1
"""
from __future__ import annotations

import argparse

import torch

from sra.evaluation.fmnist import fmnist_scorer, fmnist_scores, to_uint8
from sra.models.loading import load_model
from sra.process.ddpm_samplers import guided_output, sample
from sra.process.ddpm_schedule import get_diffusion
from sra.process.flow_samplers import euler_sampler


@torch.no_grad()
def ddim_clipped(model, noise, y, steps: int, cfg: float) -> torch.Tensor:
    """DDIM (eta 0) whose x0 prediction is clipped to [-1, 1] and epsilon recomputed from it (ADM's clip_denoised)."""
    d, x = get_diffusion(steps), noise.double()
    for i in reversed(range(d.num_timesteps)):
        eps, _ = guided_output(model, x, int(d.timestep_map[i]), y, cfg, 0.0, 1.0)
        t = torch.full((x.shape[0],), i, dtype=torch.long)
        x0 = d.predict_x0(x, t, eps).clamp(-1, 1)
        eps = (d.extract("sqrt_recip_alphas_cumprod", t, x) * x - x0) / d.extract("sqrt_recipm1_alphas_cumprod", t, x)
        abar_prev = d.extract("alphas_cumprod_prev", t, x)
        x = abar_prev.sqrt() * x0 + (1 - abar_prev).sqrt() * eps
    return x.to(noise.dtype)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("specs", nargs="+", metavar="KIND:STEPS:CFG")
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--weights", choices=("ema", "model"), default="ema")
    args = p.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.checkpoint, weights=args.weights).model.eval()
    scorer = fmnist_scorer("cpu")
    labels = torch.arange(args.samples) % model.num_classes
    noise = torch.randn((args.samples, model.in_channels, model.input_size, model.input_size),
                        generator=torch.Generator().manual_seed(0))
    for spec in args.specs:
        kind, steps, cfg = spec.split(":")
        steps, cfg = int(steps), float(cfg)
        out = []
        for i in range(0, args.samples, 250):
            z, y = noise[i:i + 250], labels[i:i + 250]
            if kind == "ode":
                x = euler_sampler(model, z, y, num_steps=steps, cfg_scale=cfg)
            elif kind == "ddim-clip":
                x = ddim_clipped(model, z, y, steps, cfg)
            else:
                x = sample(model, z, y, method=kind, num_steps=steps, cfg_scale=cfg,
                           generator=torch.Generator().manual_seed(1))
            out.append(torch.from_numpy(to_uint8(x, "nearest")))
        s = fmnist_scores(torch.cat(out).numpy(), labels.numpy(), scorer=scorer)
        print(f"{spec:16s} FD-FMNIST {s['fd_fmnist']:6.1f}   class accuracy {100 * s['class_acc']:5.1f} %", flush=True)


if __name__ == "__main__":
    main()
