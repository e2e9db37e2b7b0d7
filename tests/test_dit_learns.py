"""DiT must learn its classes: a short `sra train` run on two classes that differ only globally (which half of an 8x8
image is bright), sampled by the DDIM sampler the evaluation uses, must follow its labels. A fixed classifier (which
half is brighter) labels the samples; with the labels flipped the same noise must give the other half. This fails if
anything between the pieces (label dropout and the null row, the loop's draws, the EMA, the time input, the sampler)
stops the class from reaching the samples, or if the tiny preset's settings stop DDPM from learning it in time."""
import numpy as np
import torch
from PIL import Image

import sra
from sra.checkpoint import load_checkpoint
from sra.cli import main
from sra.process.ddpm_samplers import sample


def write_halves(root, per_class=200, seed=0):
    rng = np.random.default_rng(seed)
    for c, name in enumerate(("left", "right")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = rng.uniform(0, 60, (8, 8))
            cols = slice(0, 4) if c == 0 else slice(4, 8)
            img[:, cols] = rng.uniform(180, 255, (8, 4))
            Image.fromarray(img.astype(np.uint8)).save(root / name / f"{i}.png")


def brighter_half(x):
    return (x[:, 0, :, 4:].mean((1, 2)) > x[:, 0, :, :4].mean((1, 2))).long()  # 0: left, 1: right


def test_dit_learns_its_classes(tmp_path, extra=()):
    """`extra`: more `sra train` flags, to measure other settings by hand (e.g. ("--lr", "1e-3") fails)."""
    write_halves(tmp_path / "halves")
    steps = 400
    assert main(["train", *extra, "--model", "DiT-T/2", "--depth", "2", "--block-out-s", "1", "--block-out-t", "2",
                 "--data-dir", str(tmp_path / "halves"), "--batch-size", "64", "--max-train-steps", str(steps),
                 "--sample-every", "100000", "--checkpoint-every", "100000", "--log-every", "100", "--no-progress",
                 "--report-to", "none", "--output-dir", str(tmp_path), "--exp-name", "dit"]) == 0
    ck = load_checkpoint(tmp_path / "dit" / "checkpoints" / f"{steps:07d}.pt")
    model = sra.build_model("DiT-T/2", input_size=8, in_channels=1, num_classes=2, depth=2)
    model.load_state_dict(ck["ema"])
    model.eval()
    labels = torch.arange(100) % 2
    noise = torch.randn((100, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        sides = [brighter_half(sample(model, noise, y, method="ddim", num_steps=20)) for y in (labels, 1 - labels)]
    acc, flipped = ((side == labels).float().mean() for side in sides)
    assert acc >= 0.8, f"DiT samples follow their class in only {acc:.0%} of cases (chance: 50 %)"
    assert flipped <= 0.2, f"flipping the labels keeps {flipped:.0%} of the samples on the original side"
