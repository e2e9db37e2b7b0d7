"""SiT objective and SRA alignment against independent computations."""
import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from sra.objectives import AlignConfig, Objective, combine, token_distance
from sra.train.config import TrainConfig, resolve
from sra.train.ema import ema_decay, update_ema
from sra.process import FlowProcess
from sra.process.flow import FlowConfig
from sra.process.flow_path import interpolate, path_coefficients, sample_time
from conftest import randomize_zero_layers, tiny_model


@pytest.mark.parametrize("path", ["linear", "cosine"])
def test_path_derivatives_and_endpoints(path):
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
    a, s, da, ds = path_coefficients(path, t)
    h = 1e-6
    a2, s2, _, _ = path_coefficients(path, t + h)
    torch.testing.assert_close(da, (a2 - a) / h, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ds, (s2 - s) / h, rtol=1e-4, atol=1e-5)
    x0, e = torch.randn(2, 3), torch.randn(2, 3)
    xt, _ = interpolate(path, x0, e, torch.zeros(2))
    torch.testing.assert_close(xt, x0)  # t = 0 is data
    xt, _ = interpolate(path, x0, e, torch.ones(2))
    torch.testing.assert_close(xt, e, atol=1e-6, rtol=0)  # t = 1 is noise


def test_lognormal_times_match_their_definition():
    g = torch.Generator().manual_seed(3)
    t = sample_time("lognormal", "linear", 20000, generator=g)
    # t = s / (1 + s) with log s ~ N(0, 1)  =>  logit(t) ~ N(0, 1)
    z = torch.log(t / (1 - t))
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1) < 0.03
    tc = sample_time("lognormal", "cosine", 20000, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(torch.tan(tc * math.pi / 2), t / (1 - t), rtol=1e-3, atol=1e-3)


def test_token_distance_cosine_is_per_token_over_features():
    p, q = torch.randn(2, 5, 4), torch.randn(2, 5, 4)
    want = torch.stack([
        torch.stack([1 - (p[n, i] @ q[n, i]) / (p[n, i].norm() * q[n, i].norm()) for i in range(5)]).mean()
        for n in range(2)])
    torch.testing.assert_close(token_distance(p, q, "cos"), want)
    token_axis = 1 - F.cosine_similarity(p, q, dim=1).mean(1)  # the released code's variant: not what we compute
    assert not torch.allclose(token_distance(p, q, "cos"), token_axis)
    torch.testing.assert_close(token_distance(p, q, "sml1"),
                               F.smooth_l1_loss(p, q, beta=0.05, reduction="none").flatten(1).mean(1))
    torch.testing.assert_close(token_distance(p, q, "l2"), ((p - q) ** 2).flatten(1).mean(1))


def released_cos_loss(a, b):
    """SiT-SRA train.py with --loss-type cos, written out: Simpleloss's 1 - F.cosine_similarity(a, b) on (N, T, D)
    (default dim=1: over the token axis, (N, D)), its mean, times 0.5. Spelled out as sums, not cosine_similarity."""
    dots = (a * b).sum(1)
    norms = a.pow(2).sum(1).sqrt().clamp_min(1e-8) * b.pow(2).sum(1).sqrt().clamp_min(1e-8)
    return 0.5 * (1 - dots / norms).mean()


def test_cos_over_tokens_is_the_released_cosine_with_its_weight():
    torch.manual_seed(0)
    student = torch.randn(4, 6, 8, dtype=torch.float64)
    a = student.float().requires_grad_(True)
    b = torch.randn(4, 6, 8)
    cfg = TrainConfig(terms={"align": AlignConfig(weight=None, distance="cos-over-tokens", legacy_epoch_decay=None,
                                                  block_out_s=0, block_out_t=0, teacher_bf16=None)})
    align = resolve(cfg, (1, 8, 8), 10, "cpu").term("align")
    assert align.weight == 0.5 and not align.legacy_epoch_decay  # as their train.py: * 0.5, no decay
    assert align.effective_weight(epoch=900) == 0.5
    terms = {"denoise": torch.zeros(4), "align": token_distance(a, b, "cos-over-tokens")}
    ours = combine(terms, {"denoise": 1.0, "align": align.weight})
    ours.backward()
    ref_in = student.float().requires_grad_(True)
    want = released_cos_loss(ref_in, b)
    want.backward()
    torch.testing.assert_close(ours, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(a.grad, ref_in.grad, rtol=1e-5, atol=1e-8)
    # and it is not the per-token cosine, whose gradients differ
    assert not torch.allclose(token_distance(a, b, "cos"), token_distance(a, b, "cos-over-tokens"))


def test_cos_over_tokens_trains_from_the_cli(tmp_path):
    from sra.cli import main

    assert main(["train", "--model", "SiT-T/2", "--data-dir", "digits", "--batch-size", "8", "--no-progress",
                 "--sample-every", "1000", "--sample-steps", "2", "--log-every", "1", "--max-train-steps", "2",
                 "--loss-type", "cos-over-tokens", "--output-dir", str(tmp_path), "--exp-name", "c"]) == 0
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())["align"]
    assert (cfg["distance"], cfg["weight"], cfg["legacy_epoch_decay"]) == ("cos-over-tokens", 0.5, False)
    rows = [json.loads(line) for line in (tmp_path / "c" / "metrics.jsonl").read_text().splitlines()]
    assert all(0 <= r["align"] <= 2 for r in rows)  # 1 - cosine


def test_teacher_offset_bounds():
    t = torch.rand(5000)
    flow = FlowProcess()
    k = flow.draw_offset("uniform", 0.2, t, torch.Generator().manual_seed(0))
    assert k.min() >= 0 and k.max() <= 0.2 and abs(k.mean() - 0.1) < 0.01
    assert torch.all(flow.draw_offset("fixed", 0.2, t, None) == 0.2)
    assert torch.all(flow.draw_offset("none", 0.2, t, None) == 0)


class NoTeacher(torch.nn.Module):
    def forward_features(self, *a, **k):
        raise AssertionError("the teacher must not run when lambda = 0")


def test_lambda_zero_is_plain_sit_and_calls_no_teacher():
    m = randomize_zero_layers(tiny_model())
    x0, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    obj = Objective(FlowProcess(FlowConfig()), {"align": AlignConfig(weight=0.0, block_out_s=1, block_out_t=2)})
    draws = obj.draw(6, (1, 8, 8), "cpu", torch.Generator().manual_seed(1))
    terms = obj(m, NoTeacher(), x0, y, draws=draws)
    assert set(terms) == {"denoise"}
    # Independent plain flow matching: x_t = (1 - t) x0 + t e, target e - x0, labels dropped where u < 0.1.
    t, e = draws["t"].view(-1, 1, 1, 1), draws["noise"]
    y_drop = torch.where(draws["drop"] < 0.1, torch.full_like(y, 3), y)
    want = ((m((1 - t) * x0 + t * e, draws["t"], y_drop) - (e - x0)) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(terms["denoise"], want)
    torch.testing.assert_close(combine(terms, {"denoise": 1.0}), want.mean())


class RecordingTeacher(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []

    def forward_features(self, x, t, y, depth):
        self.calls.append(dict(x=x, t=t, y=y, depth=depth))
        return self.model.forward_features(x, t, y, depth)


def test_teacher_gets_same_labels_noise_and_later_time():
    m = randomize_zero_layers(tiny_model())
    m.y_embedder.dropout_prob = 0.5  # make drops frequent
    teacher = RecordingTeacher(copy.deepcopy(m))
    student_labels = []
    m.y_embedder.register_forward_pre_hook(lambda mod, args: student_labels.append(args[0].clone()))
    x0, y = torch.randn(16, 1, 8, 8), torch.randint(0, 3, (16,))
    cfg = AlignConfig(weight=0.5, block_out_s=1, block_out_t=3, t_max=0.2, teacher_bf16=False)
    obj = Objective(FlowProcess(FlowConfig()), {"align": cfg})
    draws = obj.draw(16, (1, 8, 8), "cpu", torch.Generator().manual_seed(2))
    terms = obj(m, teacher, x0, y, draws=draws)
    call = teacher.calls[0]
    assert call["depth"] == 3
    assert torch.equal(call["y"], student_labels[0]) and (call["y"] == 3).any()  # same dropped labels
    t_teacher = (draws["t"] - draws["k"]).clamp(0, 1)
    torch.testing.assert_close(call["t"], t_teacher)
    assert torch.all(call["t"] <= draws["t"]) and torch.all(draws["t"] - call["t"] <= 0.2 + 1e-7)
    tt = t_teacher.view(-1, 1, 1, 1)
    torch.testing.assert_close(call["x"], (1 - tt) * x0 + tt * draws["noise"])  # same x0 and noise
    # The alignment term against an independent evaluation of its definition.
    h = m.forward_features((1 - draws["t"].view(-1, 1, 1, 1)) * x0 + draws["t"].view(-1, 1, 1, 1) * draws["noise"],
                           draws["t"], student_labels[0], 1)
    g = teacher.model.forward_features(call["x"], call["t"], call["y"], 3)
    want = (1 - F.cosine_similarity(m.ap_head(h), g, dim=-1)).mean(1)
    torch.testing.assert_close(terms["align"], want, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(combine(terms, {"denoise": 1.0, "align": 0.5}), terms["denoise"].mean() + 0.5 * want.mean())


def test_alignment_gradient_reaches_student_not_teacher():
    m = randomize_zero_layers(tiny_model())
    ema = copy.deepcopy(m).requires_grad_(False)
    obj = Objective(FlowProcess(FlowConfig()), {"align": AlignConfig(weight=1.0, block_out_s=1, block_out_t=2)})
    terms = obj(m, ema, torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]), generator=torch.Generator().manual_seed(0))
    terms["align"].mean().backward()
    assert m.ap_head.linear1.weight.grad.abs().sum() > 0 and m.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert m.blocks[2].attn.qkv.weight.grad is None  # the alignment only touches blocks up to s
    assert all(p.grad is None for p in ema.parameters())


def test_ema_arithmetic_and_half_life():
    a, b = randomize_zero_layers(tiny_model(), 1), randomize_zero_layers(tiny_model(), 2)
    before = {k: v.clone() for k, v in a.state_dict().items()}
    update_ema(a, b, decay=0.9)
    for k, v in a.state_dict().items():
        if k == "pos_embed":
            continue
        torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * b.state_dict()[k])
    assert ema_decay(0, decay=0.9999, half_life_kimg=None, batch_size=64, warmup=False) == 0.9999
    assert ema_decay(5, decay=0.9999, half_life_kimg=None, batch_size=64, warmup=True) == 6 / 15
    d = ema_decay(10_000, decay=0.9999, half_life_kimg=6.4, batch_size=64, warmup=False)
    assert abs(d ** 100 - 0.5) < 1e-12  # 100 steps of 64 images = one half-life of 6400 images


def test_align_config_validation():
    with pytest.raises(ValueError, match="outside"):
        AlignConfig(block_out_s=1, block_out_t=9).validate(depth=6)
    with pytest.raises(ValueError, match="after teacher"):
        AlignConfig(block_out_s=4, block_out_t=2).validate(depth=6)
    AlignConfig(weight=0, block_out_s=40, block_out_t=2).validate(depth=6)  # lambda 0: layers unused
