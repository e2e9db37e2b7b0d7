"""Where a class-conditional model uses its class: the error of its clean-image prediction x0_hat, on Fashion-MNIST
test images noised to a given signal-to-noise ratio, beside the two predictions that need no network: the dataset's
mean image and the mean image of the true class. At low SNR (high noise) the best prediction given the class is near
the class mean; a model that has not learned to use its class there does no better than the dataset mean.

SiT (velocity v on the linear path x_t = (1 - t) x0 + t e, SNR = (1 - t)^2 / t^2): x0_hat = x_t - t v.
DiT (epsilon on DDPM's linear schedule, SNR = abar / (1 - abar)): x0_hat = (x_t - sqrt(1 - abar) eps) / sqrt(abar),
at the step whose SNR is nearest.

    python benchmarks/dit_x0_error.py runs/dit/checkpoints/0001200.pt [--samples 500]
"""
from __future__ import annotations

import argparse

import torch

from sra.data.pixels import fashion_mnist_dataset
from sra.process.ddpm_schedule import get_diffusion
from sra.models.loading import load_model

SNRS = (10.0, 1.0, 0.3, 0.1, 0.03, 0.01, 0.003)


@torch.no_grad()
def x0_errors(loaded, x0: torch.Tensor, y: torch.Tensor, noise: torch.Tensor) -> list[float]:
    model, errors = loaded.model, []
    abar = get_diffusion().alphas_cumprod.float()
    for snr in SNRS:
        if loaded.process["name"] == "ddpm":
            step = int((abar / (1 - abar) - snr).abs().argmin())
            a, s = abar[step].sqrt(), (1 - abar[step]).sqrt()
            xt = a * x0 + s * noise
            eps = model(xt, torch.full((len(x0),), step), y)[:, : x0.shape[1]]
            x0_hat = (xt - s * eps) / a
        else:
            t = 1 / (1 + snr ** 0.5)
            xt = (1 - t) * x0 + t * noise
            x0_hat = xt - t * model(xt, torch.full((len(x0),), t), y)
        errors.append(float(((x0_hat - x0) ** 2).mean()))
    return errors


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="a run folder or checkpoint of a 1x32x32 Fashion-MNIST model")
    p.add_argument("--samples", type=int, default=500, help="test images")
    p.add_argument("--weights", choices=("ema", "model"), default="ema")
    args = p.parse_args()
    torch.set_num_threads(1)
    loaded = load_model(args.checkpoint, weights=args.weights)
    test, train = fashion_mnist_dataset(split="test"), fashion_mnist_dataset(split="train")
    g = torch.Generator().manual_seed(0)
    x0, y = test.get_batch(torch.randperm(len(test), generator=g)[: args.samples])
    noise = torch.randn(x0.shape, generator=g)
    xs, ys = train.get_batch(torch.arange(len(train)))
    dataset_mean = ((xs.mean(0, keepdim=True) - x0) ** 2).mean()
    class_means = torch.stack([xs[ys == c].mean(0) for c in range(int(ys.max()) + 1)])
    class_mean = ((class_means[y] - x0) ** 2).mean()
    print(f"{loaded.process['name']} {loaded.source} step {loaded.step}: x0 mean squared error by SNR")
    print("    SNR   model   dataset-mean image   class-mean image")
    for snr, err in zip(SNRS, x0_errors(loaded, x0.float(), y, noise)):
        print(f"  {snr:6.3f}  {err:6.3f}   {float(dataset_mean):6.3f}               {float(class_mean):6.3f}")


if __name__ == "__main__":
    main()
