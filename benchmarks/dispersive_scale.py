"""Where Dispersive Loss stands in a trained run: the scale of the tokens it acts on, its value against its floor, and
its gradient there (docs/RESULTS.md's notes on the study's dispersive rows).

For each checkpoint: 64 seeded Fashion-MNIST test images, noised by the model's own process at each time, through all
blocks (the weights asked for, null-free labels); the tokens after block --block (default: the last) give
- rms: the root mean square of the token values;
- pair_d2_per_dim: the mean squared distance between two images' flattened tokens, divided by their size D (what the
  loss exponentiates, before the temperature);
- loss, and floor = log(1/B), the value when every off-diagonal pair is far apart (exp(-d) = 0): the loss cannot go
  below it;
- grad_rms: the root mean square of the loss's gradient with respect to those tokens.

    python benchmarks/dispersive_scale.py runs/study/disp-s0/checkpoints/0001200.pt runs/study/plain-s0 --times 0.3,0.7
"""
from __future__ import annotations

import argparse
import json
import math

import torch

from sra.data.pixels import load_fashion_mnist
from sra.models.loading import load_model
from sra.objectives.dispersive import dispersive_loss
from sra.generate import process_of


def measure(path: str, times: list[float], block: int | None, tau: float | None, weights: str, batch: int,
            seed: int) -> list[dict]:
    loaded = load_model(path, weights=weights)
    model = loaded.model.eval()
    trained = (loaded.config or {}).get("disp") or {}  # the run's own dispersive term, where it had one
    block = trained.get("block", 0) if block is None else block
    tau = trained.get("tau", 1.0) if tau is None else tau
    process = process_of(loaded)
    x, y = load_fashion_mnist(None, "test")
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:batch].numpy()
    images = torch.as_tensor(x[idx]).float()[:, None] / 127.5 - 1
    pad = (model.input_size - images.shape[-1]) // 2
    images = torch.nn.functional.pad(images, (pad, pad, pad, pad), value=-1.0)
    labels = torch.as_tensor(y[idx]).long()
    noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(seed + 1))
    depth = block or model.depth
    rows = []
    for t in times:
        xt = process.noisy(images, noise, t)
        tt = torch.full((batch,), process.model_time(t))
        with torch.no_grad():
            h = model.forward_features(xt, tt, labels, depth)
        h.requires_grad_(True)
        loss = dispersive_loss(h, tau)
        loss.backward()
        z = h.detach().flatten(1)
        rows.append({"checkpoint": str(loaded.source), "step": loaded.step, "weights": weights, "block": depth,
                     "tau": tau, "t": t, "rms": h.detach().pow(2).mean().sqrt().item(),
                     "pair_d2_per_dim": (torch.pdist(z).pow(2) / z.shape[1]).mean().item(),
                     "loss": loss.item(), "floor": -math.log(batch), "grad_rms": h.grad.pow(2).mean().sqrt().item()})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", help="checkpoints or run folders (their latest checkpoint)")
    ap.add_argument("--times", default="0.3,0.7", help="comma-separated times in [0, 1] (the process's convention)")
    ap.add_argument("--block", type=int, default=None, help="tokens after this block (0: the last); default: the "
                    "block the run's dispersive term acted on, else the last")
    ap.add_argument("--tau", type=float, default=None, help="the loss's temperature; default: the run's, else 1")
    ap.add_argument("--weights", default="model", choices=("model", "ema"), help="which weights (default: the "
                    "trained ones, which the loss acted on)")
    ap.add_argument("--batch", type=int, default=64, help="images (the study's batch size)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the images and the noise")
    args = ap.parse_args()
    times = [float(t) for t in args.times.split(",")]
    for path in args.checkpoints:
        for row in measure(path, times, args.block, args.tau, args.weights, args.batch, args.seed):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
