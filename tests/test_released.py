"""Sampling an authors' released checkpoint (dict with model, ema, opt and a pickled argparse.Namespace under args)
with a local VAE and no run config: `sra generate CKPT --vae DIR`, `sra sample CKPT --vae DIR`, $SRA_VAE, and a
repo id found in the local Hugging Face cache."""
import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import sra
from conftest import randomize_zero_layers, save_tiny_vae
from sra.cli import main
from sra.generate import SamplerOptions, image_generators, image_labels, process_of, sample_model_space
from sra.models import load_model

diffusers = pytest.importorskip("diffusers")
STEPS = ["--steps", "3", "--no-progress"]


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory) -> Path:
    """A tiny AutoencoderKL (4 latent channels, downsampling 2) saved as a diffusers folder."""
    return save_tiny_vae(tmp_path_factory.mktemp("vae") / "tiny-vae", sample_size=8)


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    """A tiny latent SiT saved exactly as the released train.py saves: model, ema, opt, args, epoch, steps."""
    model = randomize_zero_layers(sra.build_model("SiT-T/2", input_size=4, in_channels=4, num_classes=3, depth=2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model(torch.randn(2, 4, 4, 4), torch.rand(2), torch.tensor([0, 1])).square().mean().backward()
    opt.step()
    args = argparse.Namespace(model="SiT-T/2", path_type="linear", resolution=32, loss_type="cos", t_max=0.2,
                              block_out_s=1, block_out_t=2, exp_name="tiny", data_dir="../data/imagenet256")
    path = tmp_path_factory.mktemp("ckpt") / "SiT-T-2-SRA.pt"
    torch.save({"model": model.state_dict(), "ema": model.state_dict(), "opt": opt.state_dict(), "args": args,
                "epoch": 0, "steps": 1}, path)
    return path


def reference_images(released, vae_dir, n, seed=0):
    """Our sampler's latents for images 0..n-1, decoded as the released generate.py does: vae.decode(z / 0.18215),
    then clamp(255 * (x + 1) / 2, 0, 255) cast to uint8."""
    loaded = load_model(released)
    process = process_of(loaded)
    opts = SamplerOptions(num_steps=3).resolve(process)
    idx = list(range(n))
    with torch.no_grad():
        z = sample_model_space(loaded, process, opts, image_labels(seed, idx, 3), image_generators(seed, idx))
        vae = diffusers.AutoencoderKL.from_pretrained(vae_dir).eval()
        x = vae.decode(z.float() / 0.18215).sample
    return torch.clamp(255.0 * ((x + 1) / 2), 0, 255).permute(0, 2, 3, 1).to(torch.uint8).numpy()


def test_generate_released_checkpoint_with_a_vae_folder(released, vae_dir, tmp_path):
    out = tmp_path / "samples"
    assert main(["generate", str(released), "--vae", str(vae_dir), "--num-images", "8", "--output-dir", str(out),
                 *STEPS]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:06d}.png" for i in range(8)]
    with np.load(out / "samples.npz") as f:
        arr = f["arr_0"]
    assert arr.shape == (8, 8, 8, 3) and arr.dtype == np.uint8
    np.testing.assert_array_equal(arr, reference_images(released, vae_dir, 8))
    assert arr.std() > 5  # decoded images, not a constant


def test_sra_vae_is_honoured_without_a_store(released, vae_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SRA_VAE", str(vae_dir))
    out = tmp_path / "samples"
    assert main(["generate", str(released), "--num-images", "2", "--output-dir", str(out), *STEPS]) == 0
    with np.load(out / "samples.npz") as f:
        np.testing.assert_array_equal(f["arr_0"], reference_images(released, vae_dir, 2))


def test_sample_grid_from_a_folder_and_from_the_hf_cache(released, vae_dir, tmp_path):
    from PIL import Image

    grid = tmp_path / "grid.png"
    assert main(["sample", str(released), "--vae", str(vae_dir), "--num-images", "4", "--scale", "1",
                 "--output", str(grid), *STEPS[:2]]) == 0
    img = np.asarray(Image.open(grid))
    assert img.shape[:2] == (2 * (8 + 2) + 2, 2 * (8 + 2) + 2) and img[2:10, 2:10].std() > 0

    # The same VAE as a repo id in a Hugging Face cache (hub layout: refs/main -> snapshots/<commit>/), offline.
    cache = tmp_path / "hub"
    snap = cache / "models--tiny--vae" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    for f in vae_dir.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (cache / "models--tiny--vae" / "refs").mkdir()
    (cache / "models--tiny--vae" / "refs" / "main").write_text("0" * 40)
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(Path(sra.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "sra", "sample", str(released), "--vae", "tiny/vae", "--num-images",
                           "4", "--scale", "1", "--output", str(tmp_path / "cached.png"), *STEPS[:2]],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "cached.png")), img)


def test_released_args_give_the_sde_its_path(released, tmp_path):
    ckpt = torch.load(released, weights_only=False)
    ckpt["args"].path_type = "cos"  # the released SiT train.py spells the cosine path so
    torch.save(ckpt, tmp_path / "cos.pt")
    cos, linear = load_model(tmp_path / "cos.pt"), load_model(released)
    assert cos.process == {"name": "flow", "path": "cosine"} and process_of(cos).path == "cosine"
    assert linear.process == {"name": "flow", "path": "linear"} and process_of(linear).path == "linear"


def test_latent_checkpoint_without_a_vae_is_one_clear_line(released, vae_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SRA_VAE", raising=False)
    out = tmp_path / "out"
    assert main(["generate", str(released), "--output-dir", str(out), "--num-images", "1", *STEPS]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--vae" in err and "SRA_VAE" in err and not out.exists()
    assert main(["sample", str(released), "--vae", str(tmp_path / "nowhere"), "--output", str(tmp_path / "g.png"),
                 *STEPS[:2]]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "g.png").exists()
