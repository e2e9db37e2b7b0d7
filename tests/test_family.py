"""The family on DiT (token groups per integer step, REPA, dispersive) and tiny runs of each method on both processes."""
import json

import pytest
import torch

from sra.cli import main
from sra.process import DDPMProcess, pixel_map


def test_ddpm_per_token_steps_equal_per_sample_steps_when_all_tokens_agree():
    """Each patch at its token's step: with every token at the sample's step, x_t, target and both loss terms are the
    per-sample ones (the VB term is taken per pixel at its own step, then averaged)."""
    torch.manual_seed(0)
    p = DDPMProcess()
    x0, noise = torch.rand(3, 2, 8, 8) * 2 - 1, torch.randn(3, 2, 8, 8)
    t = torch.tensor([0, 17, 999])
    t_tok = t[:, None].expand(3, 16)  # 4x4 tokens of 2x2 patches
    xa, ta = p.corrupt(x0, noise, t)
    xb, tb = p.corrupt(x0, noise, t_tok, patch_size=2)
    torch.testing.assert_close(xa, xb)
    pred = torch.randn(3, 4, 8, 8)
    a, b = p.loss(pred, ta, x0, xa, t), p.loss(pred, tb, x0, xb, t_tok, patch_size=2)
    torch.testing.assert_close(a["denoise"], b["denoise"])
    torch.testing.assert_close(a["vb"], b["vb"], atol=1e-6, rtol=1e-5)


def test_ddpm_patches_are_corrupted_at_their_own_steps():
    p = DDPMProcess()
    x0, noise = torch.randn(1, 1, 4, 4), torch.randn(1, 1, 4, 4)
    t_tok = torch.tensor([[5, 900, 300, 0]])  # 2x2 tokens of 2x2 patches
    xt, _ = p.corrupt(x0, noise, t_tok, patch_size=2)
    steps = pixel_map(t_tok, 2)
    for step in t_tok[0].tolist():
        mask = steps == step
        want = p.diffusion.q_sample(x0, torch.tensor([step]), noise)
        torch.testing.assert_close(xt[mask], want[mask])


def test_ddpm_teacher_offsets_are_integers_below_the_bound():
    p = DDPMProcess()
    k = p.offset_from_uniform("uniform", 0.2, torch.rand(10000, generator=torch.Generator().manual_seed(0)))
    assert k.dtype == torch.long and int(k.min()) == 0 and int(k.max()) == 199
    assert torch.equal(p.lower(torch.tensor([0, 5, 500]), torch.tensor([3, 5, 100])), torch.tensor([1, 1, 400]))


@pytest.mark.parametrize("flags, terms", [
    (["--model", "DiT-T/4", "--mask-ratio", "0.25"], {"denoise", "vb", "align"}),
    (["--model", "DiT-T/4", "--sra-weight", "0", "--repa-weight", "0.5", "--repa-encoder", "fmnist"],
     {"denoise", "vb", "repa"}),
    (["--model", "SiT-T/4", "--disp-weight", "0.25"], {"denoise", "align", "disp"}),
    (["--model", "DiT-T/4", "--disp-weight", "0.25", "--sra-weight", "0"], {"denoise", "vb", "disp"}),
])
def test_tiny_runs_log_their_terms(tmp_path, flags, terms, monkeypatch):
    if "fmnist" in flags:  # a stand-in classifier body: conv-bn-relu-pool x 2 with 64 channels, as the real one
        import torch.nn as nn

        body = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2))
        monkeypatch.setattr("sra.train.features.fmnist_scorer",
                            lambda device: type("S", (), {"model": type("M", (), {"body": body})})())
    rc = main(["train", *flags, "--data-dir", "digits", "--max-train-steps", "2", "--batch-size", "8",
               "--log-every", "1", "--sample-steps", "2", "--output-dir", str(tmp_path), "--exp-name", "r",
               "--no-progress", "--report-to", "none"])
    assert rc == 0
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert terms <= set(rows[-1]) and all(k not in rows[-1] for k in {"align", "repa", "disp", "vb"} - terms)
