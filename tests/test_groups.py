"""Per-token times and token groups in the backbone (dual-timestep scheduling, attention separation).

The reference below is the authors' SiT-SRA_DTS_AS forward (vvvvvjdy/SRA, SiT-SRA_DTS_AS/model.py) written out from its
math: G whole images are patch-embedded, their tokens mixed by group id, the condition is per token (N, T, D), every
adaLN modulation is computed per token, and with attention separation the softmax logits of pairs in different groups
are filled with the dtype's minimum before the softmax (an explicit softmax, not SDPA)."""
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import randomize_zero_layers, tiny_model
from sra.models import TokenTimes


def reference_forward(m, images, t_tok, y, groups, separate: bool, depths=(2, 5)):
    """images (G, N, C, H, W): one whole input per group; groups (N, T) ids in [0, G); t_tok (N, T)."""
    g, n = images.shape[:2]
    p = m.patch_size
    # patch embedding of every group's image, then token-level mixing by gather (the authors' mix_group_tokens)
    emb = F.conv2d(images.flatten(0, 1), m.x_embedder.proj.weight, m.x_embedder.proj.bias, stride=p)
    emb = emb.flatten(2).transpose(1, 2).reshape(g, n, -1, m.hidden_size) + m.pos_embed
    x = emb.permute(1, 2, 0, 3).gather(2, groups[:, :, None, None].expand(-1, -1, 1, m.hidden_size)).squeeze(2)
    nt = x.shape[1]
    # timestep embedding per token: cos then sin, frequencies exp(-ln(10000) i / half)
    half = 128
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t_tok.reshape(-1, 1).float() * freqs[None]
    mlp = m.t_embedder.mlp
    t_emb = mlp[2](F.silu(mlp[0](torch.cat([torch.cos(args), torch.sin(args)], -1)))).reshape(n, nt, -1)
    c = t_emb + m.y_embedder.embedding_table.weight[y][:, None]  # (N, T, D)
    allow = groups[:, :, None] == groups[:, None, :]  # (N, T, T)
    heads, hd = m.num_heads, m.hidden_size // m.num_heads
    feats = {}
    for i, blk in enumerate(m.blocks):
        mod = blk.adaLN_modulation[1](F.silu(c.reshape(-1, c.shape[-1]))).reshape(n, nt, -1)
        sh1, sc1, g1, sh2, sc2, g2 = mod.chunk(6, dim=-1)
        a_in = F.layer_norm(x, (x.shape[-1],), eps=1e-6) * (1 + sc1) + sh1
        qkv = blk.attn.qkv(a_in).reshape(n, nt, 3, heads, hd).permute(2, 0, 3, 1, 4)
        logits = qkv[0] @ qkv[1].transpose(-2, -1) * hd ** -0.5
        if separate:
            logits = logits.masked_fill(~allow[:, None], torch.finfo(logits.dtype).min)
        att = (logits.softmax(-1) @ qkv[2]).transpose(1, 2).reshape(n, nt, -1)
        x = x + g1 * blk.attn.proj(att)
        m_in = F.layer_norm(x, (x.shape[-1],), eps=1e-6) * (1 + sc2) + sh2
        x = x + g2 * blk.mlp.fc2(F.gelu(blk.mlp.fc1(m_in), approximate="tanh"))
        if i + 1 in depths:
            feats[i + 1] = x
    fl = m.final_layer
    sh, sc = fl.adaLN_modulation[1](F.silu(c)).chunk(2, dim=-1)
    out = fl.linear(F.layer_norm(x, (x.shape[-1],), eps=1e-6) * (1 + sc) + sh)
    side = int(nt ** 0.5)
    out = out.reshape(n, side, side, p, p, m.out_channels)
    return torch.einsum("nhwpqc->nchpwq", out).reshape(n, m.out_channels, side * p, side * p), feats


def mix_at_patch_level(images, groups, p):
    """Pixel-space mixing: each patch comes from its group's image (what our objective feeds the model)."""
    n, side = groups.shape[0], int(groups.shape[1] ** 0.5)
    pix = groups.reshape(n, side, side).repeat_interleave(p, 1).repeat_interleave(p, 2)[:, None]  # (N, 1, H, W)
    return torch.gather(images, 0, pix.expand_as(images[0])[None]).squeeze(0)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    m = randomize_zero_layers(tiny_model(input_size=16, depth=6, hidden_size=32, num_heads=4, patch_size=4))  # 16 tokens
    with torch.no_grad():  # std 0.2 weights: separation on/off then moves block-5 tokens by O(1), not O(1e-3)
        for name, p in m.named_parameters():
            if name != "pos_embed":
                p.mul_(4)
    return m.eval()


@pytest.mark.parametrize("separate", [True, False])
def test_matches_authors_dts_as_model(model, separate):
    g, n, t = 3, 4, 16
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(g, n, 1, 16, 16, generator=gen)
    groups = torch.randint(0, g, (n, t), generator=gen)
    groups[0] = 1  # one sample in a single group (a "full sample")
    t_group = torch.rand(n, g, generator=gen)
    t_tok = t_group.gather(1, groups)  # one time per token: its group's time
    y = torch.tensor([0, 1, 2, 3])
    want, feats = reference_forward(model, images, t_tok, y, groups, separate)
    x = mix_at_patch_level(images, groups, model.patch_size)
    kw = dict(groups=groups) if separate else {}
    with torch.no_grad():
        torch.testing.assert_close(model(x, t_tok, y, **kw), want, atol=1e-4, rtol=1e-4)
        for d in (2, 5):
            torch.testing.assert_close(model.forward_features(x, t_tok, y, depth=d, **kw), feats[d],
                                       atol=1e-4, rtol=1e-4)
        out, h = model(x, t_tok, y, feature_depth=2, **kw)
        torch.testing.assert_close(h, feats[2], atol=1e-4, rtol=1e-4)
        # The same times kept once per group (adaLN once per group, spread to the tokens afterwards)
        tt = TokenTimes(t_group, groups)
        torch.testing.assert_close(model(x, tt, y, **kw), want, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(model.forward_features(x, tt, y, depth=5, **kw), feats[5], atol=1e-4, rtol=1e-4)


def legacy_forward(m, x, t, y):
    """Today's forward before groups existed, op for op: per-sample condition broadcast with unsqueeze(1)."""
    h = m.x_embedder(x) + m.pos_embed
    c = m.t_embedder(t).to(h.dtype) + m.y_embedder(y)
    n, nt, d = h.shape
    for blk in m.blocks:
        sh1, sc1, g1, sh2, sc2, g2 = blk.adaLN_modulation(c).chunk(6, dim=-1)
        a_in = blk.norm1(h) * (1 + sc1.unsqueeze(1)) + sh1.unsqueeze(1)
        qkv = blk.attn.qkv(a_in).reshape(n, nt, 3, blk.attn.num_heads, d // blk.attn.num_heads).permute(2, 0, 3, 1, 4)
        att = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        h = h + g1.unsqueeze(1) * blk.attn.proj(att.transpose(1, 2).reshape(n, nt, d))
        h = h + g2.unsqueeze(1) * blk.mlp(blk.norm2(h) * (1 + sc2.unsqueeze(1)) + sh2.unsqueeze(1))
    sh, sc = m.final_layer.adaLN_modulation(c).chunk(2, dim=-1)
    return m.unpatchify(m.final_layer.linear(m.final_layer.norm_final(h) * (1 + sc.unsqueeze(1)) + sh.unsqueeze(1)))


def test_ungrouped_forward_is_bit_identical_to_legacy(model):
    x, t, y = torch.randn(3, 1, 16, 16), torch.rand(3), torch.tensor([0, 1, 2])
    with torch.no_grad():
        assert torch.equal(model(x, t, y), legacy_forward(model, x, t, y))
        assert torch.equal(model(x, t, y, groups=None), legacy_forward(model, x, t, y))


def test_one_group_equals_ungrouped_and_constant_token_times_equal_per_sample_time(model):
    x, t, y = torch.randn(3, 1, 16, 16), torch.rand(3), torch.tensor([0, 1, 2])
    one = torch.full((3, 16), 2)
    with torch.no_grad():
        torch.testing.assert_close(model(x, t, y, groups=one), model(x, t, y), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(x, t[:, None].expand(3, 16), y), model(x, t, y), atol=1e-5, rtol=1e-5)


def test_separated_token_ignores_other_groups(model):
    """With attention separation a token's output is a function of its own group's tokens only."""
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(2, 1, 16, 16, generator=gen), torch.tensor([0, 2])
    groups = torch.randint(0, 2, (2, 16), generator=gen)
    t_tok = torch.where(groups == 0, 0.3, 0.8)
    p = model.patch_size
    pix = groups.reshape(2, 4, 4).repeat_interleave(p, 1).repeat_interleave(p, 2)[:, None]
    x2 = torch.where(pix == 1, torch.randn(x.shape, generator=gen), x)  # change every group-1 patch
    t2 = torch.where(groups == 1, 0.1, t_tok)                          # and the group-1 times
    with torch.no_grad():
        a, b = model(x, t_tok, y, groups=groups), model(x2, t2, y, groups=groups)
        keep = pix.expand_as(a) == 0
        torch.testing.assert_close(a[keep], b[keep], atol=1e-5, rtol=1e-5)
        assert (a[~keep] - b[~keep]).abs().max() > 1e-3  # the changed group did change
        c = model(x2, t2, y)  # without separation group 0 sees the change
        assert (a[keep] - c[keep]).abs().max() > 1e-3


@pytest.mark.parametrize("checkpointing", [False, True])
def test_group_times_equal_per_token_times_with_gradients(model, checkpointing):
    """TokenTimes(values, index) and the per-token tensor values.gather(1, index): the same prediction, block tokens
    and parameter gradients (also through activation checkpointing, which passes the index to every block)."""
    gen = torch.Generator().manual_seed(4)
    x, y = torch.randn(3, 1, 16, 16, generator=gen), torch.tensor([0, 1, 2])
    values, index = torch.rand(3, 2, generator=gen), torch.randint(0, 2, (3, 16), generator=gen)
    grads = []
    model.grad_checkpointing = checkpointing
    try:
        for t in (TokenTimes(values, index), values.gather(1, index)):
            model.zero_grad()
            out, h = model(x, t, y, feature_depth=2, groups=index)
            (out.square().mean() + h.square().mean()).backward()
            grads.append(({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}, out, h))
    finally:
        model.grad_checkpointing = False
        model.zero_grad()
    (g1, out1, h1), (g2, out2, h2) = grads
    # float32 matmuls of other shapes round differently (up to ~4e-6 on outputs of order 1 on some CPUs)
    torch.testing.assert_close(out1, out2, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(h1, h2, atol=2e-5, rtol=1e-4)
    assert g1.keys() == g2.keys() and "blocks.0.adaLN_modulation.1.weight" in g1
    for k in g1:
        torch.testing.assert_close(g1[k], g2[k], atol=2e-5, rtol=1e-3)


def test_bad_token_time_shape(model):
    with pytest.raises(ValueError, match="per-token times"):
        model(torch.randn(2, 1, 16, 16), torch.rand(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="token times"):
        model(torch.randn(2, 1, 16, 16), TokenTimes(torch.rand(2, 2), torch.zeros(2, 5, dtype=torch.long)),
              torch.tensor([0, 1]))
