"""Backbone: shapes, adaLN-Zero, embeddings against closed forms, checkpoint key names, truncated forwards."""
import math

import numpy as np
import pytest
import torch

import sra
from sra.models import sincos_pos_embed_2d, timestep_frequencies
from conftest import randomize_zero_layers, tiny_model


def test_output_shapes_sit_and_dit():
    x, t, y = torch.randn(2, 3, 16, 16), torch.rand(2), torch.tensor([0, 4])
    sit = sra.build_model("SiT-T/4", input_size=16, in_channels=3, num_classes=5, depth=2)
    dit = sra.build_model("DiT-T/4", input_size=16, in_channels=3, num_classes=5, depth=2)
    assert sit(x, t, y).shape == (2, 3, 16, 16)
    assert dit(x, t * 999, y).shape == (2, 6, 16, 16)  # learned sigma: 2C channels
    assert sit.forward_features(x, t, y, depth=1).shape == (2, 16, 128)


def test_zero_output_at_initialisation():
    m = tiny_model()
    out = m(torch.randn(4, 1, 8, 8), torch.rand(4), torch.tensor([0, 1, 2, 3]))
    assert torch.equal(out, torch.zeros_like(out))


def test_timestep_embedding_closed_form():
    t = torch.tensor([0.0, 0.37, 1.0, 250.0])
    emb = timestep_frequencies(t, dim=8, max_period=10000)
    freqs = [10000 ** (-i / 4) for i in range(4)]
    want = [[math.cos(tv * f) for f in freqs] + [math.sin(tv * f) for f in freqs] for tv in t.tolist()]
    torch.testing.assert_close(emb, torch.tensor(want), rtol=1e-5, atol=1e-5)


def test_pos_embed_closed_form():
    d, g = 8, 3
    pe = sincos_pos_embed_2d(d, g)
    for idx in range(g * g):
        row, col = divmod(idx, g)
        omega = [1 / 10000 ** (k / 2) for k in range(2)]
        want = ([math.sin(col * w) for w in omega] + [math.cos(col * w) for w in omega]
                + [math.sin(row * w) for w in omega] + [math.cos(row * w) for w in omega])
        np.testing.assert_allclose(pe[idx], want, rtol=1e-6, atol=1e-7)


def test_released_checkpoint_names_and_shapes():
    with torch.device("meta"):
        sit = sra.build_model("SiT-XL/2", input_size=32, in_channels=4, num_classes=1000)
        dit = sra.build_model("DiT-XL/2", input_size=32, in_channels=4, num_classes=1000)
    s = {k: tuple(v.shape) for k, v in sit.state_dict().items()}
    assert s["pos_embed"] == (1, 256, 1152)
    assert s["x_embedder.proj.weight"] == (1152, 4, 2, 2)
    assert s["t_embedder.mlp.0.weight"] == (1152, 256) and s["t_embedder.mlp.2.weight"] == (1152, 1152)
    assert s["y_embedder.embedding_table.weight"] == (1001, 1152)
    assert s["blocks.27.attn.qkv.weight"] == (3456, 1152) and s["blocks.27.attn.proj.bias"] == (1152,)
    assert s["blocks.0.mlp.fc1.weight"] == (4608, 1152) and s["blocks.0.mlp.fc2.weight"] == (1152, 4608)
    assert s["blocks.0.adaLN_modulation.1.weight"] == (6912, 1152)
    assert s["ap_head.linear1.weight"] == (2304, 1152) and s["ap_head.linear2.weight"] == (1152, 2304)
    assert s["final_layer.linear.weight"] == (16, 1152) and s["final_layer.adaLN_modulation.1.weight"] == (2304, 1152)
    assert "blocks.28.attn.qkv.weight" not in s
    assert tuple(dit.state_dict()["final_layer.linear.weight"].shape) == (32, 1152)  # 2 x 2 patch x 2C channels
    # LayerNorms carry no parameters (elementwise_affine=False), as in the released code.
    assert not any("norm" in k for k in s)


def test_forward_features_equals_full_forward_tokens_and_runs_only_those_blocks():
    m = randomize_zero_layers(tiny_model(depth=4))
    x, t, y = torch.randn(3, 1, 8, 8), torch.rand(3), torch.tensor([0, 1, 3])
    calls = []
    hooks = [b.register_forward_hook(lambda mod, i, o, k=k: calls.append(k)) for k, b in enumerate(m.blocks)]
    feats = m.forward_features(x, t, y, depth=2)
    assert calls == [0, 1]
    calls.clear()
    out, full_feats = m(x, t, y, feature_depth=2)
    assert calls == [0, 1, 2, 3]
    for h in hooks:
        h.remove()
    torch.testing.assert_close(feats, full_feats, rtol=0, atol=0)
    torch.testing.assert_close(out, m(x, t, y))
    with pytest.raises(ValueError):
        m.forward_features(x, t, y, depth=5)


def test_null_label_row_and_unknown_preset():
    m = tiny_model()
    assert m.y_embedder.embedding_table.num_embeddings == 4  # 3 classes + null
    with pytest.raises(ValueError, match="unknown model"):
        sra.build_model("SiT-Q/2")
    with pytest.raises(TypeError):
        sra.build_model("SiT-B/2", bogus=1)


def test_architecture_read_off_state_dict_round_trips(tmp_path):
    from sra.models import load_model

    m = randomize_zero_layers(sra.build_model("DiT-T/4", input_size=16, in_channels=3, num_classes=7, depth=2))
    torch.save({"ema": m.state_dict()}, tmp_path / "w.pt")
    lm = load_model(tmp_path / "w.pt")
    assert lm.process == {"name": "ddpm"} and lm.model.depth == 2 and lm.model.num_classes == 7 and lm.model.input_size == 16
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([10.0, 500.0]), torch.tensor([1, 7])
    torch.testing.assert_close(lm.model(x, t, y), m.eval()(x, t, y))
