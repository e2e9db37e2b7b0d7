"""DiT learning beside the authors' DiT-SRA diffusion code: the same model initialisation, the same batches, trained
once with sra's objective and once with the authors' `GaussianDiffusion.training_losses` (their diffusion package,
imported unmodified from a checkout you name), then the class accuracy of DDIM samples from each EMA.

The backbone is sra's DiT for both (it loads the authors' released checkpoints strictly, i.e. it is their
architecture); an adapter gives it their model interface `forward(x, t, y, ad) -> (out, tokens, labels)` with label
dropout inside the training-mode forward, as their LabelEmbedder. Both use sra's tiny-preset optimiser settings (AdamW,
linear warm-up over 200 steps, clipping 1.0, EMA 0.999 with the (1 + n) / (10 + n) warm-up) and the DiT+SRA weight
0.4 x 0.1 on the alignment term; only the objective differs, and each draws its own times and noise.

Tasks: `halves`, two classes of 8x8 images that differ only in which half is bright (scored by the brighter half);
`digits`, scikit-learn's 8x8 digits (scored by the nearest class-mean image of the training set).

    python benchmarks/dit_reference.py --reference SRA_CHECKOUT/DiT-SRA --task halves --steps 600
"""
from __future__ import annotations

import argparse
import copy
import sys

import torch

import sra
from sra.data.pixels import digits_dataset
from sra.process.ddpm_samplers import sample
from sra.objectives import AlignConfig, Objective, combine
from sra.process import DDPMProcess


def halves(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes: class 0 bright on the left half, class 1 on the right, uniform noise elsewhere; in [-1, 1]."""
    y = torch.arange(n) % 2
    x = torch.rand((n, 1, 8, 8), generator=generator) * 60 / 127.5 - 1
    bright = torch.rand((n, 1, 8, 4), generator=generator) * 75 / 127.5 + 180 / 127.5 - 1
    x[y == 0, :, :, :4] = bright[y == 0]
    x[y == 1, :, :, 4:] = bright[y == 1]
    return x, y


class AuthorsInterface(torch.nn.Module):
    """sra's DiT behind the authors' forward signature."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, t, y, ad=4):
        emb = self.model.y_embedder
        if self.model.training and emb.dropout_prob > 0:
            y = torch.where(torch.rand(y.shape[0]) < emb.dropout_prob, torch.full_like(y, emb.num_classes), y)
        out, h = self.model(x, t, y, feature_depth=ad)
        return out, (self.model.ap_head(h) if self.model.training else h), y


def train(model0, data, order, objective: str, create_diffusion):
    torch.manual_seed(1)
    model, ema = copy.deepcopy(model0).train(), copy.deepcopy(model0).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.999), weight_decay=0.0)
    ours = Objective(DDPMProcess(), {"align": AlignConfig(weight=0.04, distance="sml1", block_out_s=2, block_out_t=4,
                                                          teacher_bf16=False)})
    theirs = create_diffusion(timestep_respacing="")
    gen = torch.Generator().manual_seed(2)
    x_all, y_all = data
    for step, idx in enumerate(order):
        for group in opt.param_groups:
            group["lr"] = LR * min(1.0, (step + 1) / 200)
        x0, y = x_all[idx], y_all[idx]
        if objective == "sra":
            loss = combine(ours(model, ema, x0, y, generator=gen), ours.weights())
        else:
            t = torch.randint(0, theirs.num_timesteps, (x0.shape[0],))
            terms = theirs.training_losses(AuthorsInterface(model), x0, t, y, AuthorsInterface(ema), 2, 4, 200)
            loss = terms["loss"].mean() + terms["align_loss"].mean() * 0.4 * 0.1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.lerp_(pm, 1 - decay)
    return ema


def main() -> None:
    global LR
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", required=True, help="the authors' DiT-SRA folder (holds their diffusion/ package)")
    p.add_argument("--task", choices=("halves", "digits"), default="halves")
    p.add_argument("--steps", type=int, default=600, help="optimizer steps of batch 64")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (after a 200-step warm-up)")
    p.add_argument("--samples", type=int, default=200)
    args = p.parse_args()
    LR = args.lr
    sys.path.insert(0, args.reference)
    from diffusion import create_diffusion  # the authors' package, from the checkout named on the command line

    torch.set_num_threads(1)
    if args.task == "halves":
        data, classes = halves(400, torch.Generator().manual_seed(0)), 2
        classify = lambda s: (s[:, 0, :, 4:].mean((1, 2)) > s[:, 0, :, :4].mean((1, 2))).long()  # noqa: E731
    else:
        d = digits_dataset("train")
        data, classes = d.get_batch(torch.arange(len(d))), 10
        means = torch.stack([data[0][data[1] == c].mean(0) for c in range(10)]).flatten(1)
        classify = lambda s: torch.cdist(s.flatten(1).float(), means).argmin(1)  # noqa: E731
    torch.manual_seed(0)
    model0 = sra.build_model("DiT-T/2", input_size=8, in_channels=1, num_classes=classes)
    order = [torch.randperm(len(data[0]), generator=torch.Generator().manual_seed(100 + s))[:64]
             for s in range(args.steps)]
    labels = torch.arange(args.samples) % classes
    noise = torch.randn((args.samples, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    for objective in ("sra", "authors"):
        ema = train(model0, data, order, objective, create_diffusion)
        with torch.no_grad():
            acc = (classify(sample(ema, noise, labels, method="ddim", num_steps=20)) == labels).float().mean()
        print(f"{args.task}, {args.steps} steps, lr {args.lr:g}, {objective:7s} objective: sample class accuracy "
              f"{float(acc):.2f} (chance {1 / classes:.2f})", flush=True)


LR = 1e-3
if __name__ == "__main__":
    main()
