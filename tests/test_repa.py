"""REPA: the MLP projector and the negative-cosine term against closed forms, the DINOv2 encoder against REPA's
preprocessing written out, features stored by `sra prepare --encoder` against the encoder run at train time, and short
training runs (encoder at train time on pixels; stored features on latents)."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from sra.objectives import AlignConfig, Objective, RepaConfig
from sra.objectives.repa import repa_term
from sra.process.flow import FlowConfig, FlowProcess
from sra.train.config import resolve_spec
from sra.train.loop import train
from conftest import randomize_zero_layers, save_tiny_vae, tiny_model

pytest.importorskip("transformers")
pytest.importorskip("diffusers")


def test_projector_is_repas_mlp_in_closed_form():
    m = tiny_model()
    obj = Objective(FlowProcess(), {"repa": RepaConfig(weight=0.5, block=2, projector_dim=7)},
                    resources={"z_dim": 5, "hidden_size": m.hidden_size, "encoder": None})
    projector = obj.term("repa").module
    shapes = {k: tuple(v.shape) for k, v in projector.state_dict().items()}
    assert shapes == {"0.weight": (7, 32), "0.bias": (7,), "2.weight": (7, 7),
                      "2.bias": (7,), "4.weight": (5, 7), "4.bias": (5,)}
    assert set(obj.modules.state_dict()) == {f"repa.{k}" for k in shapes}  # the objective's modules, by term name
    randomize_zero_layers(projector)
    h = torch.randn(2, 3, 32)
    w = projector.state_dict()
    silu = lambda v: v / (1 + torch.exp(-v))  # noqa: E731
    want = silu(silu(h @ w["0.weight"].T + w["0.bias"]) @ w["2.weight"].T + w["2.bias"]) @ w["4.weight"].T + w["4.bias"]
    torch.testing.assert_close(projector(h), want)
    # the backbone holds no projector (released checkpoints: none)
    assert not any(k.startswith("projectors.") for k in m.state_dict()) and not hasattr(m, "projectors")


def test_negative_cosine_closed_form():
    p = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]]])
    z = torch.tensor([[[1.0, 1.0], [0.0, -5.0], [3.0, 4.0]]])
    want = -(1 / math.sqrt(2) + -1.0 + 1.0) / 3  # cosines 1/sqrt(2), -1, 1; scale does not matter
    torch.testing.assert_close(repa_term(p, z), torch.tensor([want]))
    torch.testing.assert_close(repa_term(10 * p, 0.1 * z), torch.tensor([want]))
    with pytest.raises(ValueError, match="token grid"):
        repa_term(p, z[:, :2])


def test_objective_term_is_minus_cos_of_projected_block_tokens():
    torch.manual_seed(0)
    m = randomize_zero_layers(tiny_model(class_dropout_prob=0.0))
    obj = Objective(FlowProcess(FlowConfig()),
                    {"align": AlignConfig(weight=0.0), "repa": RepaConfig(weight=0.5, block=2, projector_dim=16)},
                    patch_size=2, resources={"z_dim": 6, "hidden_size": m.hidden_size, "encoder": None})
    projector = randomize_zero_layers(obj.term("repa").module)
    x0, y = torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 2])
    feats = torch.randn(3, 16, 6)
    draws = obj.draw(3, (1, 8, 8), "cpu", torch.Generator().manual_seed(0))
    terms = obj(m, None, x0, y, draws=draws, features=feats)
    t = draws["t"].view(-1, 1, 1, 1)
    h = m.forward_features((1 - t) * x0 + t * draws["noise"], draws["t"], y, depth=2)
    want = -F.cosine_similarity(projector(h), feats, dim=-1).mean(1)
    torch.testing.assert_close(terms["repa"], want, atol=1e-6, rtol=1e-5)
    assert "align" not in terms


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, patch_size=2,
                       image_size=16)
    path = tmp_path_factory.mktemp("dino") / "tiny-dinov2"
    Dinov2Model(cfg).eval().save_pretrained(path)
    return path


def antialiased_table(table, grid):
    """REPA's set-up written out: timm's resample_abs_pos_embed (CLS kept, the square patch table resized by bicubic
    interpolation with antialiasing in float32)."""
    side = int(math.isqrt(table.shape[1] - 1))
    patches = table[0, 1:].reshape(side, side, -1).permute(2, 0, 1)[None]
    patches = F.interpolate(patches.float(), size=(grid, grid), mode="bicubic", antialias=True)
    return torch.cat([table[:, :1], patches[0].permute(1, 2, 0).reshape(1, grid * grid, -1)], dim=1)


def test_dinov2_encoder_follows_repas_preprocessing(dino_dir):
    from transformers import Dinov2Model

    from sra.encoders import encode, load_encoder

    enc = load_encoder(str(dino_dir))
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    got = encode(enc, images, grid=4)
    # REPA: x in [0, 1], ImageNet normalisation, bicubic resize so the patch grid is the model's (4 x 2 px = 8 px);
    # the 8 x 8 position table resized once to 4 x 4 with antialiasing (timm's resample_abs_pos_embed)
    x = (images + 1) / 2
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = F.interpolate(x, size=8, mode="bicubic")
    ref = Dinov2Model.from_pretrained(dino_dir).eval()
    table = ref.embeddings.position_embeddings.detach().clone()
    want_table = antialiased_table(table, 4)
    plain_table = F.interpolate(table[0, 1:].reshape(8, 8, -1).permute(2, 0, 1)[None], size=(4, 4), mode="bicubic")
    assert not torch.allclose(want_table[0, 1:], plain_table[0].permute(1, 2, 0).reshape(16, -1), atol=1e-3)
    ref.embeddings.position_embeddings.data = want_table
    with torch.no_grad():
        want = ref(pixel_values=x).last_hidden_state[:, 1:]
        ref.embeddings.position_embeddings.data = table  # transformers' own per-call resize (no antialiasing)
        unaliased = ref(pixel_values=x).last_hidden_state[:, 1:]
    assert got.shape == (2, 16, 16)
    torch.testing.assert_close(enc.net.embeddings.position_embeddings, want_table)
    torch.testing.assert_close(got, want)
    assert not torch.allclose(got, unaliased, atol=1e-4)
    # resized once: a second batch on the same grid uses the same table; another grid resizes the trained table
    table_id = enc.net.embeddings.position_embeddings.data_ptr()
    torch.testing.assert_close(encode(enc, images, grid=4), got)
    assert enc.net.embeddings.position_embeddings.data_ptr() == table_id
    encode(enc, images, grid=2)
    torch.testing.assert_close(enc.net.embeddings.position_embeddings, antialiased_table(table, 2))
    with pytest.raises(ValueError, match="neither 'fmnist' nor a local folder"):
        load_encoder("/no/such/dinov2")


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    return save_tiny_vae(tmp_path_factory.mktemp("vae") / "tiny-vae")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for c in ("ant", "bee"):
        (root / c).mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (20 + 7 * i, 23, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_prepared_features_equal_the_encoder_at_train_time(tmp_path, images, vae_dir, dino_dir):
    from sra.data import load_dataset
    from sra.data.prepare import PrepareConfig, center_crop_adm, prepare
    from sra.encoders import encode, load_encoder
    from sra.checkpoint import latest_checkpoint, load_checkpoint
    from sra.models.loading import load_model
    from sra.train.features import feature_source

    store = tmp_path / "store"
    prepare(PrepareConfig(src=str(images), out=str(store), vae=str(vae_dir), resolution=16, flip=True, batch_size=3,
                          chunk_size=3, num_workers=0, progress=False, encoder=str(dino_dir), encoder_grid=4))
    ds = load_dataset(str(store))
    assert ds.feature_info["tokens"] == 16 and ds.feature_info["dim"] == 16
    dim, enc_at_train = feature_source(str(dino_dir), ds, 4, "cpu")  # the encoder REPA's config names
    assert (dim, enc_at_train) == (16, None) and ds.with_features  # training will run no encoder
    files = (store / "files.txt").read_text().split()
    crops = torch.from_numpy(np.stack([center_crop_adm(Image.open(images / f), 16) for f in files]))
    crops = torch.stack([crops, crops.flip(2)], 1).flatten(0, 1)  # each image and its mirror, as stored
    want = encode(load_encoder(str(dino_dir)), crops.permute(0, 3, 1, 2).float() / 127.5 - 1, grid=4)
    _, _, stored = ds.get_batch(torch.arange(len(ds)))
    torch.testing.assert_close(stored.float(), want.half().float())
    torch.testing.assert_close(ds[3][2], stored[3])
    with pytest.raises(ValueError, match="8x8 tokens"):
        feature_source(str(dino_dir), load_dataset(str(store)), 8, "cpu")

    # two training steps on the store read the stored features; the checkpoint holds the projector (its "terms")
    train(*resolve_spec(dict(model="SiT-T/2", data_dir=str(store), max_train_steps=2, batch_size=4, sample_steps=1,
                             output_dir=str(tmp_path / "runs"), progress=False, log_every=1, align=dict(weight=0.0),
                             repa=dict(weight=0.5, encoder=str(dino_dir), projector_dim=8))))
    rows = [json.loads(r) for r in (tmp_path / "runs" / "demo" / "metrics.jsonl").read_text().splitlines()]
    assert all(-1 <= r["repa"] <= 1 and "align" not in r for r in rows)
    load_model(tmp_path / "runs" / "demo")  # the backbone loads without it
    ck = load_checkpoint(latest_checkpoint(tmp_path / "runs" / "demo"))
    assert tuple(ck["terms"]["repa.4.weight"].shape) == (16, 8)  # projector_dim 8 -> the features' 16


def test_repa_on_latents_without_features_is_one_clear_error(tmp_path, images, vae_dir, dino_dir):
    from sra.data.prepare import PrepareConfig, prepare

    store = tmp_path / "plain-store"
    prepare(PrepareConfig(src=str(images), out=str(store), vae=str(vae_dir), resolution=16, batch_size=4,
                          num_workers=0, progress=False))
    with pytest.raises(ValueError, match=r"sra prepare \.\.\. --encoder"):
        train(*resolve_spec(dict(model="SiT-T/2", data_dir=str(store), max_train_steps=1, batch_size=4,
                                 output_dir=str(tmp_path / "runs"), progress=False,
                                 repa=dict(weight=0.5, encoder=str(dino_dir)))))
