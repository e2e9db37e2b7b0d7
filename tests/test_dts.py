"""Dual-timestep scheduling and attention separation in the SiT objective, against the authors' loss (vvvvvjdy/SRA,
SiT-SRA_DTS_AS/loss.py) written out here: one whole noisy image and target per group, mixed token by token after
patchifying, and the teacher's input per teacher-time option."""
import math

import pytest
import torch
import torch.nn.functional as F

from sra.objectives import AlignConfig, MixConfig, Objective, slice_draws
from sra.process.flow import FlowConfig, FlowProcess
from sra.objectives.dts import draw_groups, group_counts
from conftest import randomize_zero_layers, tiny_model

P = 4  # patch size of the test model: 16x16 inputs -> 16 tokens


def authors_counts(ratios, seq_len):
    """Their _compute_group_counts for one sample: float32 products, floor, then +1 for the `remainder` largest
    fractional parts as torch.topk ranks them (its batch dimension of 1 kept, as they call it)."""
    expected = torch.as_tensor(ratios, dtype=torch.float32).unsqueeze(0) * seq_len  # (1, G)
    counts = torch.floor(expected).long()
    for row, rem in enumerate((seq_len - counts.sum(dim=1)).tolist()):
        if rem > 0:
            counts[row, torch.topk(expected[row] - counts[row].float(), k=rem).indices] += 1
    return counts[0].tolist()


@pytest.mark.parametrize("ratio,normalised", [((0.25,), [0.25, 0.75]), ((0.0,), [1.0]), ((1.0,), [1.0]),
                                              ((0.5, 0.0, 0.5), [0.5, 0.5]), ((2.0, 1.0, 1.0), [0.5, 0.25, 0.25])])
def test_ratio_normalisation(ratio, normalised):
    assert MixConfig(mask_ratio=ratio).ratios() == pytest.approx(normalised)
    assert MixConfig(mask_ratio=ratio).active == (len(normalised) > 1)


@pytest.mark.parametrize("ratios,seq_len", [([0.3, 0.7], 16), ([0.5, 0.3, 0.2], 64), ([0.25, 0.75], 256),
                                            ([0.1, 0.6, 0.3], 7), ([0.33, 0.67], 10)])
def test_group_counts_round_as_the_authors(ratios, seq_len):
    assert group_counts(ratios, seq_len) == authors_counts(ratios, seq_len)
    assert sum(group_counts(ratios, seq_len)) == seq_len


def test_group_counts_at_ties_and_over_a_grid():
    # ties of the fractional parts, where rounding in float64 and sorting gave other counts than the reference
    assert group_counts(MixConfig(mask_ratio=(0.7,)).ratios(), 5) == authors_counts([0.7, 0.30000000000000004], 5)
    assert group_counts([0.7, 1 - 0.7], 5) == [4, 1]
    five = MixConfig(mask_ratio=(0.2,) * 5).ratios()
    assert group_counts(five, 16) == authors_counts(five, 16)
    grid = [MixConfig(mask_ratio=(k / 100,)).ratios() for k in range(1, 100)]
    grid += [MixConfig(mask_ratio=r).ratios() for r in ((0.2,) * 5, (0.5, 0.3, 0.2), (0.1, 0.6, 0.3), (1, 1, 1),
                                                        (0.25,) * 4, (0.15, 0.35, 0.5), (1 / 3, 1 / 3, 1 / 3))]
    for ratios in grid:
        for tokens in range(1, 260):
            assert group_counts(ratios, tokens) == authors_counts(ratios, tokens), (ratios, tokens)


class LabelTeacher:
    """Records the labels the teacher is given and delegates to a model."""

    def __init__(self, model):
        self.model, self.labels = model, []

    def forward_features(self, x, t, y, depth, groups=None):
        self.labels.append(y.clone())
        return self.model.forward_features(x, t, y, depth=depth, groups=groups)


@pytest.mark.parametrize("mix,clean", [(MixConfig(mask_ratio=(0.25,)), True), (MixConfig(), False)])
def test_teacher_labels_follow_each_reference(mix, clean):
    """SiT-SRA_DTS_AS (token groups) gives its eval-mode teacher the labels before dropout; plain SRA (SiT-SRA) the
    student's dropped labels."""
    kw = dict(input_size=16, depth=4, hidden_size=32, num_heads=4, patch_size=P, class_dropout_prob=0.5)
    model = randomize_zero_layers(tiny_model(**kw))  # a null-label row, dropped half the time
    teacher = randomize_zero_layers(tiny_model(**kw), seed=5)
    seen = []
    model.y_embedder.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
    recorder = LabelTeacher(teacher)
    obj = Objective(FlowProcess(FlowConfig()),
                    {"align": AlignConfig(weight=0.5, block_out_s=1, block_out_t=3, teacher_bf16=False)}, mix,
                    patch_size=P)
    x0, y = torch.randn(8, 1, 16, 16), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    obj(model, recorder, x0, y, generator=torch.Generator().manual_seed(3))
    dropped = seen[0]
    assert (dropped == model.y_embedder.num_classes).any() and not torch.equal(dropped, y)
    assert torch.equal(recorder.labels[0], y if clean else dropped)


def test_group_ids_have_exact_counts_random_positions_and_full_samples():
    cfg = MixConfig(mask_ratio=(0.3,), full_sample_prob=0.5)
    gen = torch.Generator().manual_seed(0)
    keys, full = torch.rand(64, 16, generator=gen), torch.rand(64, generator=gen)
    g = draw_groups(cfg, 64, 16, keys, full)
    is_full = full < 0.5
    assert 10 < int(is_full.sum()) < 54
    assert (g[is_full] == 1).all()
    assert ((g[~is_full] == 0).sum(1) == 5).all() and ((g[~is_full] == 1).sum(1) == 11).all()  # 4.8 -> 5, 11.2 -> 11
    # group 0 positions: the 5 smallest keys of each sample (first counts[0] positions of the permutation)
    first = keys.argsort(1)[:, :5]
    assert (g[~is_full].gather(1, first[~is_full]) == 0).all()
    assert len({tuple(r.tolist()) for r in g[~is_full]}) > 20  # positions differ between samples


def cosine_path(t):
    a = t * math.pi / 2
    return torch.cos(a), torch.sin(a), -math.pi / 2 * torch.sin(a), math.pi / 2 * torch.cos(a)


def patchify(x, p):
    n, c, h, _ = x.shape
    s = h // p
    return torch.einsum("nchpwq->nhwpqc", x.reshape(n, c, s, p, s, p)).reshape(n, s * s, p * p * c)


def unpatchify(tok, p, c):
    n, t, _ = tok.shape
    s = int(t ** 0.5)
    return torch.einsum("nhwpqc->nchpwq", tok.reshape(n, s, s, p, p, c)).reshape(n, c, s * p, s * p)


def token_mix(images, groups, p):
    """Authors' mixing: patchify every group's (N, C, H, W) image, gather each token from its group."""
    tok = torch.stack([patchify(x, p) for x in images], dim=2)  # (N, T, G, P)
    mixed = tok.gather(2, groups[:, :, None, None].expand(-1, -1, 1, tok.shape[-1])).squeeze(2)
    return unpatchify(mixed, p, images[0].shape[1])


def authors_terms(model, teacher, x0, y, draws, mix: MixConfig, align: AlignConfig):
    """The DTS_AS loss for given draws: per-group images and targets, token mixing, teacher view per option."""
    noise, groups = draws["noise"], draws["groups"]
    t0 = draws["t"]
    ts = [t0] + ([draws["t_more"][:, i] for i in range(draws["t_more"].shape[1])] if mix.dual_time_scheduling
                 else [t0] * draws["t_more"].shape[1])
    k = [draws["k"]] + [align.t_max * draws["u_more"][:, i]
                                                       for i in range(draws["u_more"].shape[1])]
    view = lambda t: t.view(-1, 1, 1, 1)  # noqa: E731
    inputs, targets = [], []
    for t in ts:
        a, s, da, ds = cosine_path(view(t))
        inputs.append(a * x0 + s * noise)
        targets.append(da * x0 + ds * noise)
    x_mixed, target = token_mix(inputs, groups, P), token_mix(targets, groups, P)
    t_tok = torch.stack(ts, 1).gather(1, groups)
    sep = groups if mix.attention_separation else None
    pred, h = model(x_mixed, t_tok, y, feature_depth=align.block_out_s, groups=sep)
    denoise = ((pred - target) ** 2).flatten(1).mean(1)
    if mix.teacher_t == "same":
        xt_t, time_t, g_t = x_mixed, t_tok, groups
    elif mix.teacher_t == "sra":
        tt = [(t - kk).clamp(0, 1) for t, kk in zip(ts, k)]
        xt_t = token_mix([cosine_path(view(t))[0] * x0 + cosine_path(view(t))[1] * noise for t in tt], groups, P)
        time_t, g_t = torch.stack(tt, 1).gather(1, groups), groups
    else:
        t_min = torch.stack(ts, 1).min(1).values
        a, s, _, _ = cosine_path(view(t_min))
        branch = a * x0 + s * noise
        if mix.teacher_mask:
            xt_t, time_t, g_t = token_mix([branch] + [x0] * (len(ts) - 1), groups, P), t_min[:, None].expand_as(
                t_tok), groups
        else:
            xt_t, time_t, g_t = branch, t_min, None
    g_att = g_t if (g_t is not None and mix.attention_separation) else None
    with torch.no_grad():
        g = teacher.forward_features(xt_t, time_t, y, depth=align.block_out_t, groups=g_att)
    align_term = (1 - F.cosine_similarity(model.ap_head(h), g, dim=-1)).mean(1)
    return denoise, align_term


def setup_models():
    torch.manual_seed(0)
    m = randomize_zero_layers(tiny_model(input_size=16, depth=4, hidden_size=32, num_heads=4, patch_size=P,
                                         class_dropout_prob=0.0))
    teacher = randomize_zero_layers(tiny_model(input_size=16, depth=4, hidden_size=32, num_heads=4, patch_size=P,
                                               class_dropout_prob=0.0), seed=5)
    return m, teacher


@pytest.mark.parametrize("mix", [
    MixConfig(mask_ratio=(0.25,)),                                                     # the authors' recipe
    MixConfig(mask_ratio=(0.25,), attention_separation=False, dual_time_scheduling=False),
    MixConfig(mask_ratio=(0.5, 0.3, 0.2), teacher_t="same"),
    MixConfig(mask_ratio=(0.4,), teacher_t="self_flow", full_sample_prob=0.5),
    MixConfig(mask_ratio=(0.4,), teacher_t="self_flow", teacher_mask=False),
])
def test_objective_terms_match_authors_loss(mix):
    model, teacher = setup_models()
    align = AlignConfig(weight=0.5, block_out_s=1, block_out_t=3, teacher_bf16=False)
    obj = Objective(FlowProcess(FlowConfig(path="cosine")), {"align": align}, mix, patch_size=P)
    gen = torch.Generator().manual_seed(1)
    x0, y = torch.randn(6, 1, 16, 16, generator=gen), torch.tensor([0, 1, 2, 0, 1, 2])
    draws = obj.draw(6, (1, 16, 16), "cpu", gen)
    assert draws["groups"].shape == (6, 16) and draws["t_more"].shape == (6, len(mix.ratios()) - 1)
    terms = obj(model, teacher, x0, y, draws=draws)
    want_denoise, want_align = authors_terms(model, teacher, x0, y, draws, mix, align)
    torch.testing.assert_close(terms["denoise"], want_denoise, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(terms["align"], want_align, atol=1e-5, rtol=1e-5)
    # the draws of a global batch sliced per rank give the same per-sample terms (world-size independence)
    parts = [obj(model, teacher, x0[a:b], y[a:b], draws=slice_draws(draws, a, b)) for a, b in ((0, 2), (2, 6))]
    for key in ("denoise", "align"):
        torch.testing.assert_close(torch.cat([p[key] for p in parts]), terms[key], atol=1e-6, rtol=1e-6)


def test_draws_are_a_function_of_the_generator_and_keep_the_plain_stream():
    mix_obj = Objective(FlowProcess(FlowConfig()), {"align": AlignConfig()}, MixConfig(mask_ratio=(0.25,)),
                        patch_size=P)
    plain = Objective(FlowProcess(FlowConfig()), {"align": AlignConfig()}, patch_size=P)
    a = mix_obj.draw(4, (1, 16, 16), "cpu", torch.Generator().manual_seed(7))
    b = mix_obj.draw(4, (1, 16, 16), "cpu", torch.Generator().manual_seed(7))
    c = plain.draw(4, (1, 16, 16), "cpu", torch.Generator().manual_seed(7))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(a[k], c[k]) for k in c)  # mixing appends draws; the plain ones are unchanged
    off = Objective(FlowProcess(FlowConfig()), {"align": AlignConfig()},
                    MixConfig(mask_ratio=(0.25,), dual_time_scheduling=False),
                    patch_size=P).draw(4, (1, 16, 16), "cpu", torch.Generator().manual_seed(7))
    assert all(torch.equal(a[k], off[k]) for k in a)  # DTS off draws the same (and then ignores t_more)


def test_dts_off_and_one_group_reduce_to_plain_inputs():
    """Without DTS every group has the same time, so the mixed input is the ordinary x_t; with teacher_t self_flow
    and a single group the teacher sees the student's own time (SRA with k = 0)."""
    model, teacher = setup_models()
    align = AlignConfig(weight=0.5, block_out_s=1, block_out_t=3, teacher_bf16=False)
    gen = torch.Generator().manual_seed(2)
    x0, y = torch.randn(4, 1, 16, 16, generator=gen), torch.tensor([0, 1, 2, 0])
    off = Objective(FlowProcess(FlowConfig(path="cosine")), {"align": align},
                    MixConfig(mask_ratio=(0.25,), dual_time_scheduling=False, attention_separation=False), patch_size=P)
    plain = Objective(FlowProcess(FlowConfig(path="cosine")), {"align": AlignConfig(weight=0.0)}, patch_size=P)
    draws = off.draw(4, (1, 16, 16), "cpu", gen)
    torch.testing.assert_close(off(model, teacher, x0, y, draws=draws)["denoise"],
                               plain(model, teacher, x0, y, draws=draws)["denoise"], atol=1e-6, rtol=1e-6)
    sf = Objective(FlowProcess(FlowConfig()), {"align": align}, MixConfig(teacher_t="self_flow"), patch_size=P)
    none = Objective(FlowProcess(FlowConfig()), {"align": AlignConfig(weight=0.5, block_out_s=1, block_out_t=3,
                                                                       interval="none", teacher_bf16=False)},
                     patch_size=P)
    d = none.draw(4, (1, 16, 16), "cpu", gen)  # k = 0 in these draws; self_flow ignores k
    torch.testing.assert_close(sf(model, teacher, x0, y, draws=d)["align"], none(model, teacher, x0, y, draws=d)["align"])


def test_mix_config_validation():
    for bad, msg in [(dict(mask_ratio=(-0.1,)), "non-negative"), (dict(teacher_t="x"), "unknown teacher time"),
                     (dict(mask_ratio=(0.5, 0.3, 0.2), full_sample_prob=0.1), "two token groups"),
                     (dict(mask_ratio=(0.25,), teacher_mask=False), "self_flow only"),
                     (dict(full_sample_prob=1.5), r"\[0, 1\]")]:
        with pytest.raises(ValueError, match=msg):
            MixConfig(**bad).validate()


def test_cli_trains_with_token_groups_and_resumes_identically(tmp_path):
    """`sra train --mask-ratio 0.25` (the authors' flags); a resumed run repeats the draws of a straight one."""
    import json

    from sra.cli import main

    args = ["train", "--model", "SiT-T/2", "--data-dir", "digits", "--batch-size", "8", "--sample-steps", "1",
            "--no-progress", "--log-every", "1", "--mask-ratio", "0.5", "0.3", "0.2", "--teacher-t", "same",
            "--output-dir", str(tmp_path)]
    assert main(args + ["--exp-name", "straight", "--max-train-steps", "3"]) == 0
    assert main(args + ["--exp-name", "resumed", "--max-train-steps", "2", "--checkpoint-every", "2"]) == 0
    assert main(args + ["--exp-name", "resumed", "--max-train-steps", "3", "--checkpoint-every", "2"]) == 0
    cfg = json.loads((tmp_path / "straight" / "config.json").read_text())
    assert cfg["mix"]["mask_ratio"] == [0.5, 0.3, 0.2] and cfg["mix"]["teacher_t"] == "same"
    rows = {n: [json.loads(r) for r in (tmp_path / n / "metrics.jsonl").read_text().splitlines()]
            for n in ("straight", "resumed")}
    assert rows["straight"][-1]["align"] == rows["resumed"][-1]["align"]
    assert rows["straight"][-1]["denoise"] == rows["resumed"][-1]["denoise"]
