"""`sra generate` / `sra sample` end to end on a tiny model: torchrun equivalence, resumption, ADM .npz, bad input."""
import argparse
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

import sra
from conftest import estimate_of
from sra.cli import main
from sra.distributed import step_seed
from sra.generate import LABEL_STREAM, SamplerOptions, generate

FAST = dict(options=SamplerOptions(num_steps=6), progress=False)  # SDE, CFG 1.8 in [0, 0.7]: the protocol, shortened
FAST_FLAGS = ["--steps", "6", "--no-progress"]



@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A tiny SiT saved like the authors' releases: 'ema', 'model' and an argparse.Namespace under 'args'."""
    torch.manual_seed(0)
    m = sra.build_model("SiT-T/4", input_size=8, in_channels=1, num_classes=3, depth=2)
    for p in m.final_layer.parameters():  # zero-initialised otherwise: make the output depend on x, t and y
        nn.init.normal_(p, std=0.1)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch.save({"ema": m.state_dict(), "model": m.state_dict(), "args": argparse.Namespace(model="SiT-T/4")}, path)
    return path


@pytest.fixture(scope="module")
def reference(ckpt, tmp_path_factory) -> np.ndarray:
    """Five images from one process in one batch of 5 (odd, so that two ranks get unequal shares)."""
    out = tmp_path_factory.mktemp("ref") / "out"
    result = generate(ckpt, out, num_images=5, seed=3, batch_size=5, **FAST)
    assert result.generated == 5 and result.npz == out / "samples.npz"
    with np.load(result.npz) as f:
        assert list(f.keys()) == ["arr_0", "arr_1"]
        # arr_1: the labels the images were conditioned on, as ADM writes them.
        want = [int(torch.randint(3, (1,), generator=torch.Generator().manual_seed(step_seed(3, i, LABEL_STREAM))))
                for i in range(5)]
        assert f["arr_1"].tolist() == want
        return f["arr_0"]


def test_npz_is_adm_format(reference):
    assert reference.dtype == np.uint8 and reference.shape == (5, 8, 8, 3)
    assert (reference[..., 0] == reference[..., 1]).all() and (reference[..., 0] == reference[..., 2]).all()
    assert reference.std() > 10 and (reference[0] != reference[1]).any()  # real, distinct images


def test_torchrun_two_processes_equal_one(ckpt, reference, tmp_path):
    out = tmp_path / "dist"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "sra",
           "generate", str(ckpt), "--output-dir", str(out), "--num-images", "5", "--seed", "3",
           "--batch-size", "2", *FAST_FLAGS]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.glob("*.png")) == [f"{i:06d}.png" for i in range(5)]
    with np.load(out / "samples.npz") as f:
        np.testing.assert_array_equal(f["arr_0"], reference)


def test_torchrun_a_failing_rank_stops_every_rank_in_one_line(ckpt, reference, tmp_path):
    """Rank 1 cannot write its first image: it stops with its own one-line error, and rank 0 stops after its batch in
    progress with one line (the ranks agree after every batch, so none goes on alone towards a barrier); the same
    command without the fault finishes the folder: rank 0's images were kept and the set equals one process's."""
    out = tmp_path / "dist"
    script = tmp_path / "failing_rank.py"
    script.write_text(
        "import errno, os, sys\n"
        "import sra.generate as g\n"
        "real = g.save_png\n"
        "def full(img, path):\n"
        "    if os.environ['RANK'] == '1':\n"
        "        raise OSError(errno.ENOSPC, 'No space left on device', str(path))\n"
        "    return real(img, path)\n"
        "g.save_png = full\n"
        "from sra.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    # unbuffered, as in CI: every write is a system call, the case where two ranks' lines can run into one
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", PYTHONUNBUFFERED="1")
    args = ["generate", str(ckpt), "--output-dir", str(out), "--num-images", "5", "--seed", "3", "--batch-size", "2",
            *FAST_FLAGS]
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run([*launch, str(script), *args], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0
    errors = [l for l in proc.stderr.splitlines() if l.startswith("sra generate: error:")]
    # (torchrun itself prints a traceback of its own when a child exits non-zero; none comes from sra's code)
    assert len(errors) == 2 and "sra/generate.py" not in proc.stderr, proc.stderr[-3000:]
    assert any("No space left on device" in e for e in errors) and any("another process stopped" in e for e in errors)
    # rank 0 drew its first batch (images 0 and 2) and stopped there, not after its whole share (4 too)
    assert sorted(p.name for p in out.glob("*.png")) == ["000000.png", "000002.png"]
    proc = subprocess.run([*launch, "-m", "sra", *args], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(out / "samples.npz") as f:
        np.testing.assert_array_equal(f["arr_0"], reference)


def test_resume_skips_written_images(ckpt, reference, tmp_path):
    out = tmp_path / "out"
    assert generate(ckpt, out, num_images=3, seed=3, batch_size=1, **FAST).generated == 3
    kept = (out / "000000.png").stat().st_mtime_ns
    (out / "000001.png").unlink()
    result = generate(ckpt, out, num_images=5, seed=3, batch_size=4, **FAST)
    assert result.generated == 3  # image 1 again, then 3 and 4
    assert (out / "000000.png").stat().st_mtime_ns == kept
    with np.load(out / "samples.npz") as f:
        np.testing.assert_array_equal(f["arr_0"], reference)


def test_folder_of_another_run_is_refused(ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    generate(ckpt, out, num_images=1, seed=3, batch_size=1, **FAST)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rc = main(["generate", str(ckpt), "--output-dir", str(out), "--num-images", "2", "--seed", "4", *FAST_FLAGS])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "another run" in err and "seed" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (out / "manifest.json").unlink()
    rc = main(["generate", str(ckpt), "--output-dir", str(out), "--num-images", "2", "--seed", "3", *FAST_FLAGS])
    assert rc == 2 and "without a manifest.json" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--cfg-scale", "0.5"], "cfg scale must be >= 1"),
    (["--classes", "1,5"], "class 5 is out of range"),
    (["--classes", ","], "class list is empty"),
    (["--model", "SiT-B/4"], "not a SiT-B/4"),
    (["--model", "DiT-T/4"], "not a DiT-T/4"),
    (["--input-size", "32"], "not input size 32"),
    (["--mode", "ddpm"], "does not apply to a SiT"),
    (["--guidance-low", "0.8", "--guidance-high", "0.2"], "guidance interval"),
])
def test_bad_input_one_line_nothing_written(ckpt, tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    for command in (["generate", str(ckpt), "--output-dir", str(out)],
                    ["sample", str(ckpt), "--output", str(tmp_path / "g.png")]):
        rc = main(command + flags + ["--steps", "2"])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and message in err, err
    assert list(tmp_path.iterdir()) == []


def test_sample_grid_rows_per_class(ckpt, tmp_path, capsys):
    from PIL import Image

    path = tmp_path / "grid.png"
    rc = main(["sample", str(ckpt), "--classes", "0,2", "--per-class", "3", "--steps", "4", "--mode", "ode",
               "--scale", "1", "--output", str(path)])
    assert rc == 0, capsys.readouterr().err
    img = np.asarray(Image.open(path))
    assert img.shape[:2] == (2 * (8 + 2) + 2, 3 * (8 + 2) + 2)  # 2 rows of 3 8x8 images, 2 px padding
    assert img[2:10, 2:10].std() > 0  # an image, not padding


def test_dit_models_dispatch_to_the_ddpm_process(tmp_path, monkeypatch):
    """DiT checkpoints go to the DDPM process's sampler with the DiT protocol (stubbed: another test checks it)."""
    seen = {}

    def sample(model, noise, y, *, method="ddpm", num_steps=250, cfg_scale=1.0, guidance_low=0.0, guidance_high=1.0,
               generator=None, cfg_channels="all"):
        seen.update(method=method, num_steps=num_steps, cfg_scale=cfg_scale, shape=tuple(noise.shape),
                    generators=len(generator), cfg_channels=cfg_channels)
        return torch.zeros_like(noise)

    monkeypatch.setattr("sra.process.ddpm.ddpm_sample", sample)
    m = sra.build_model("DiT-T/4", input_size=8, in_channels=1, num_classes=3, depth=1)
    torch.save({"ema": m.state_dict()}, tmp_path / "dit.pt")
    result = generate(tmp_path / "dit.pt", tmp_path / "out", num_images=2, batch_size=2, progress=False)
    assert seen == dict(method="ddpm", num_steps=250, cfg_scale=1.5, shape=(2, 1, 8, 8), generators=2,
                        cfg_channels="dit")
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["sampler"]["mode"] == "ddpm"
    with np.load(result.npz) as f:
        assert (f["arr_0"] == 127).all()  # zeros in [-1, 1] -> 127.5, truncated as the reference does


def test_latent_models_need_a_store_and_decode_through_its_vae(tmp_path, monkeypatch, capsys):
    m = sra.build_model("SiT-T/4", input_size=8, in_channels=4, num_classes=3, depth=1)
    torch.save({"ema": m.state_dict()}, tmp_path / "latent.pt")
    rc = main(["sample", str(tmp_path / "latent.pt"), "--steps", "2", "--output", str(tmp_path / "g.png")])
    assert rc == 2 and "--latent-store" in capsys.readouterr().err and not (tmp_path / "g.png").exists()

    # Stubbed store and VAE (the real ones need diffusers weights): unnormalise x / 0.5, decode = first 3 channels.
    store = types.SimpleNamespace(vae_name="stub-vae", unnormalize=lambda x: x / 0.5, normalize="scale", scale=0.5)
    latents = types.SimpleNamespace(is_latent_store=lambda p: True, open_latent_store=lambda p: store)
    monkeypatch.setitem(sys.modules, "sra.data.latents", latents)
    monkeypatch.setattr("sra.data.vae.load_vae", lambda name, device="cpu": name)
    monkeypatch.setattr("sra.data.vae.decode_latents", lambda vae, z: (z[:, :3] * 0.0 + 0.5))
    result = generate(tmp_path / "latent.pt", tmp_path / "out", num_images=2, batch_size=2, latent_store="store",
                      options=SamplerOptions(num_steps=2), progress=False)
    with np.load(result.npz) as f:
        assert f["arr_0"].shape == (2, 8, 8, 3) and (f["arr_0"] == 191).all()  # 0.5 in [-1, 1] -> 191


def test_dit_ddpm_per_image_seeds(tmp_path):
    """The real DDPM sampler gets one generator per image: batch 1 and batch 3 give the same images."""
    torch.manual_seed(0)
    m = sra.build_model("DiT-T/4", input_size=8, in_channels=1, num_classes=3, depth=1)
    nn.init.normal_(m.final_layer.linear.weight, std=0.1)
    torch.save({"ema": m.state_dict()}, tmp_path / "dit.pt")
    arrays = []
    for b in (1, 3):
        opts = SamplerOptions(num_steps=4, cfg_scale=2.0)
        r = generate(tmp_path / "dit.pt", tmp_path / f"b{b}", num_images=3, batch_size=b, options=opts, progress=False)
        with np.load(r.npz) as f:
            arrays.append(f["arr_0"])
    np.testing.assert_array_equal(arrays[0], arrays[1])
    assert arrays[0].std() > 5


def test_uint8_truncates_as_the_reference_and_grids_round():
    from sra.data.grid import to_uint8

    x = torch.cat([torch.linspace(-1.2, 1.2, 997), torch.tensor([0.0, -1.0, 1.0, 1 / 255, 2 / 255 - 1])])
    x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))].reshape(1, 1, 1, -1).repeat(1, 3, 1, 1)
    # The released generate.py: samples = (samples + 1) / 2; clamp(255 * samples, 0, 255), cast to uint8 (float32).
    a = x.permute(0, 2, 3, 1).numpy().astype(np.float32)
    ref = np.clip(np.float32(255) * ((a + np.float32(1)) / np.float32(2)), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(to_uint8(x), ref)
    nearest = np.floor(np.clip((a.astype(np.float64) + 1) * 127.5, 0, 255) + 0.5)
    near = to_uint8(x, "nearest").astype(np.float64)
    assert (near != nearest).sum() <= 2  # ties (x = 0 -> 127.5) may go to the even level
    diff = near - ref
    assert set(np.unique(diff)) <= {0.0, 1.0} and 0.4 < diff.mean() < 0.6  # rounding lifts by half a level
    with pytest.raises(ValueError, match="rounding"):
        to_uint8(x, "ceil")


def test_generate_says_its_guidance_and_cost_and_a_finished_rerun_draws_no_bar(ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    flags = ["generate", str(ckpt), "--output-dir", str(out), "--num-images", "6", "--batch-size", "2",
             "--steps", "2"]
    assert main(flags + ["--no-progress"]) == 0
    text = capsys.readouterr().out
    # the ImageNet protocol's guidance is named as such before anything is drawn
    assert text.splitlines()[0].startswith("sampler: sde, 2 steps, CFG 1.8 for t in [0, 0.7] (--mode, --cfg-scale")
    assert "ImageNet 256 protocol" in text.splitlines()[0]
    # one estimate, after the first of three batches: 4 images left of 6
    assert "the first batch of 2 images took" in text
    left, total = estimate_of(text)
    assert 0 < left < total and left == pytest.approx(total * 4 / 6, rel=0.2, abs=0.01)
    assert text.index("estimate: ") < text.index("samples.npz")
    # the same command on the finished folder: one line says so, and no progress bar is drawn (it was drawn twice)
    assert main(flags) == 0
    captured = capsys.readouterr()
    assert "all 6 images are already in" in captured.out and "estimate" not in captured.out
    assert "img" not in captured.err and "100%" not in captured.err


def test_sample_names_the_guidance_it_uses(ckpt, tmp_path, capsys):
    grid = str(tmp_path / "g.png")
    assert main(["sample", str(ckpt), "--steps", "2", "--num-images", "1", "--output", grid]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "CFG 1.8 for t in [0, 0.7]" in first and "--cfg-scale" in first and "ImageNet 256 protocol" in first
    assert main(["sample", str(ckpt), "--mode", "ode", "--steps", "2", "--cfg-scale", "1", "--num-images", "1",
                 "--output", grid]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "sampler: ode, 2 steps, no guidance"  # nothing defaulted


def test_sampler_flags_are_the_sampler_options():
    """SamplerOptions' fields are the sampler flags of `sra sample` and `sra generate`, declared once."""
    import dataclasses

    from sra.cli import build_parser
    from sra.commands.sample import options_from_args
    from sra.generate import SamplerOptions

    for command in ("sample", "generate"):
        args = build_parser().parse_args([command, "run"] + (["--output-dir", "x"] if command == "generate" else []))
        assert options_from_args(args) == SamplerOptions()
        args = build_parser().parse_args([command, "run", "--steps", "7", "--heun", "--cfg-channels", "all"]
                                         + (["--output-dir", "x"] if command == "generate" else []))
        assert options_from_args(args) == dataclasses.replace(SamplerOptions(), num_steps=7, heun=True,
                                                               cfg_channels="all")
