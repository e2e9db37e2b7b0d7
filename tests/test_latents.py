"""Latent preprocessing and stores: the ADM crop, encode -> store -> dataset, posterior sampling, the reference layout,
resumption, bad input, and a short training run on latents. A tiny AutoencoderKL is saved to a temporary folder and
loaded through the same from_pretrained path as the real SD-VAE."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("diffusers")

from sra.data import DataError, load_dataset  # noqa: E402
from sra.data.base import is_latent_store  # noqa: E402
from sra.data.latents import ReferenceLatents, open_latent_store  # noqa: E402
from sra.data.prepare import PrepareConfig, center_crop_adm, prepare  # noqa: E402
from sra.data.vae import encode_moments, load_vae  # noqa: E402
from conftest import save_tiny_vae  # noqa: E402

RES = 16  # image side; the tiny VAE halves it -> latents 4 x 8 x 8


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    return save_tiny_vae(tmp_path_factory.mktemp("vae") / "tiny-vae")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two classes of random images of assorted sizes, one grayscale, one CMYK, one unreadable, one truncated."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c in ("ant", "bee"):
        (root / c).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 256, (20 + 9 * i, 37, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (30, 20), dtype=np.uint8)).save(root / "ant" / "gray.png")
    Image.fromarray(rng.integers(0, 256, (24, 24, 4), dtype=np.uint8), "CMYK").save(root / "bee" / "cmyk.jpg")
    (root / "bee" / "broken.jpg").write_bytes(b"not an image")
    data = (root / "ant" / "0.png").read_bytes()
    (root / "ant" / "truncated.png").write_bytes(data[: len(data) // 2])
    return root


def run_prepare(src, out, vae, **kw):
    args = dict(src=str(src), out=str(out), vae=str(vae), resolution=RES, batch_size=3, chunk_size=4, num_workers=0,
                progress=False)
    return prepare(PrepareConfig(**(args | kw)))


@pytest.fixture(scope="module")
def store(tmp_path_factory, images, vae_dir):
    out = tmp_path_factory.mktemp("stores") / "flip"
    run_prepare(images, out, vae_dir, flip=True)
    return out


def test_center_crop_matches_adm_recipe():
    """517x300 to 64, step by step: BOX-halve while the short side >= 128 (258x150, 129x75), BICUBIC to the short
    side 64 (round(129 * 64 / 75) = 110 -> 110x64), center crop at x = (110 - 64) // 2 = 23."""
    yy, xx = np.mgrid[0:300, 0:517]
    arr = np.stack([xx % 256, yy % 256, (xx * yy) % 251], -1).astype(np.uint8)
    im = Image.fromarray(arr)
    ref = im.resize((258, 150), Image.BOX).resize((129, 75), Image.BOX).resize((110, 64), Image.BICUBIC)
    expected = np.asarray(ref)[:, 23:87]
    np.testing.assert_array_equal(center_crop_adm(im, 64), expected)
    assert center_crop_adm(im.convert("L"), 64).shape == (64, 64, 3)
    assert center_crop_adm(im.convert("CMYK"), 64).shape == (64, 64, 3)


def test_store_round_trips_the_moments(store, images, vae_dir):
    ds = load_dataset(str(store))
    assert is_latent_store(store) and ds.shape == (4, RES // 2, RES // 2) and ds.class_names == ["ant", "bee"]
    files = (store / "files.txt").read_text().split()
    skipped = (store / "skipped.txt").read_text()
    assert "ant/truncated.png" in skipped and "bee/broken.jpg" in skipped
    good = [f for f in files if f not in skipped]
    assert len(ds) == 2 * len(good) == 2 * 12  # every readable image and its mirror
    vae = load_vae(str(vae_dir))
    crops = torch.from_numpy(np.stack([center_crop_adm(Image.open(images / f), RES) for f in good]))
    want = encode_moments(vae, torch.stack([crops, crops.flip(2)], 1).flatten(0, 1))
    x, y = ds.get_batch(torch.arange(len(ds)))
    torch.testing.assert_close(x.float(), want.half().float())
    assert y.tolist() == [int(f.startswith("bee")) for f in good for _ in range(2)]
    x3, _ = ds.get_batch(torch.tensor([5, 0, 17]))  # arbitrary order, single items agree
    torch.testing.assert_close(x3, torch.stack([ds[5][0], ds[0][0], ds[17][0]]))
    img = ds.decode(ds.prepare_batch(x[:2]))
    assert img.shape == (2, 3, RES, RES) and img.abs().max() <= 1


def test_posterior_sample_statistics(store):
    ds = open_latent_store(store)
    m, _ = ds.get_batch(torch.tensor([3]))
    z = ds.prepare_batch(m.expand(20000, -1, -1, -1), torch.Generator().manual_seed(1))
    mean, std = m.float()[0].chunk(2)
    torch.testing.assert_close(z.mean(0), 0.18215 * mean, atol=4 * 0.18215 * std.max().item() / 141, rtol=0)
    torch.testing.assert_close(z.std(0), 0.18215 * std, atol=0, rtol=0.05)
    # Per-channel normalisation: the whole store comes out with zero mean and unit variance per channel.
    dc = open_latent_store(store, normalize="channel")
    x, _ = dc.get_batch(torch.arange(len(dc)))
    zc = torch.cat([dc.prepare_batch(x, torch.Generator().manual_seed(k)) for k in range(50)])
    torch.testing.assert_close(zc.mean((0, 2, 3)), torch.zeros(4), atol=0.03, rtol=0)
    torch.testing.assert_close(zc.std((0, 2, 3)), torch.ones(4), atol=0.03, rtol=0)
    torch.testing.assert_close(dc.unnormalize(dc.prepare_batch(x[:4], torch.Generator().manual_seed(2))),
                               ds.unnormalize(ds.prepare_batch(x[:4], torch.Generator().manual_seed(2))))


def test_reference_layout_loads(tmp_path):
    """REPA/SRA dataset_tools.py encode: vae-sd/00000/img-mean-std-00000000.npy (float32) + vae-sd/dataset.json."""
    rng = np.random.default_rng(0)
    moments, labels = rng.normal(size=(7, 8, 4, 4)).astype(np.float32), [3, 0, 2, 2, 1, 0, 3]
    entries = []
    for i in range(7):
        name = f"{i // 5:05d}/img-mean-std-{i:08d}.npy"
        (tmp_path / "vae-sd" / name).parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / "vae-sd" / name, moments[i])
        entries.append([name, labels[i]])
    (tmp_path / "vae-sd" / "dataset.json").write_text(json.dumps({"labels": entries[::-1]}))
    ds = load_dataset(str(tmp_path))
    assert isinstance(ds, ReferenceLatents) and len(ds) == 7 and ds.shape == (4, 4, 4) and ds.num_classes == 4
    for i in range(7):
        x, y = ds[i]
        np.testing.assert_array_equal(x.numpy(), moments[i])
        assert int(y) == labels[i]
    assert not hasattr(ds, "get_batch")  # one file per image: the DataLoader path


def test_resume_after_interruption(tmp_path, images, vae_dir, store):
    out = tmp_path / "store"
    first = run_prepare(images, out, vae_dir, flip=True, max_chunks=1)
    assert first["pending"] > 0
    with pytest.raises(DataError, match="incomplete"):
        open_latent_store(out)
    before = np.load(out / "moments.npy")[:8].copy()
    run_prepare(images, out, vae_dir, flip=True)
    np.testing.assert_array_equal(np.load(out / "moments.npy")[:8], before)  # the committed chunk was not redone
    for name in ("moments.npy", "status.npy", "labels.npy"):  # the same as the uninterrupted store
        np.testing.assert_array_equal(np.load(out / name), np.load(store / name))
    lines = (out / "skipped.txt").read_text().splitlines()
    assert len(lines) == len(set(lines)) == 2
    assert run_prepare(images, out, vae_dir, flip=True)["encoded_now"] == 0  # complete: nothing to do


def test_bad_input_is_one_clear_error(tmp_path, images, vae_dir, store):
    with pytest.raises(DataError, match="does not exist"):
        run_prepare(images, tmp_path / "a", tmp_path / "no-such-vae")
    other = tmp_path / "unet"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(DataError, match="not an AutoencoderKL"):
        run_prepare(images, tmp_path / "b", other)
    with pytest.raises(DataError, match="not in the Hugging Face cache"):
        load_vae("nobody-here/no-such-vae")
    stamp = {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in store.iterdir()}
    with pytest.raises(DataError, match="resolution=16 \\(asked: 32\\)"):
        run_prepare(images, store, vae_dir, flip=True, resolution=32)
    assert stamp == {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in store.iterdir()}
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        run_prepare(images, tmp_path / "busy", vae_dir)


def test_cli_prepare_then_train_on_latents(tmp_path, images, vae_dir):
    from sra.cli import main

    out = tmp_path / "store"
    assert main(["prepare", str(images), str(out), "--resolution", str(RES), "--vae", str(vae_dir),
                 "--num-workers", "0", "--no-progress"]) == 0
    assert main(["train", "--model", "SiT-T/2", "--data-dir", str(out), "--max-train-steps", "2", "--batch-size", "4",
                 "--sample-steps", "1", "--output-dir", str(tmp_path / "runs"), "--no-progress"]) == 0
    cfg = json.loads((tmp_path / "runs" / "demo" / "config.json").read_text())
    assert (cfg["in_channels"], cfg["input_size"]) == (4, RES // 2)
    assert os.path.exists(tmp_path / "runs" / "demo" / "samples" / "0000002.png")


def test_list_file_source(tmp_path, images):
    from sra.data.prepare import list_images

    lst = tmp_path / "train.txt"
    lst.write_text(f"{images}/ant/1.png 7\n# a comment\n{images}/bee/2.png 3\n")
    paths, labels, names = list_images(lst)
    assert paths == [f"{images}/ant/1.png", f"{images}/bee/2.png"] and labels.tolist() == [7, 3] and len(names) == 8
    lst.write_text(f"{images}/ant/1.png\n{images}/bee/2.png\n")  # no labels: the parent folder is the class
    assert list_images(lst)[1].tolist() == [0, 1] and list_images(lst)[2] == ["ant", "bee"]
    lst.write_text(f"{images}/ant/1.png 7\n{images}/bee/2.png\n")
    with pytest.raises(DataError, match="every line"):
        list_images(lst)
