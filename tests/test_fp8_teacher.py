"""The FP8 teacher (train/fp8.py, `--teacher-fp8`): refused where FP8 is not native, its numerics checked on the CPU
(torch runs `_scaled_mm` there, though without any speed-up), its weights cast once per EMA update."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from sra import distributed
from sra.cli import main
from sra.objectives import apply_label_drop
from sra.train.config import DataShape, resolve_spec
from sra.train.fp8 import E4M3_MAX, Fp8Linear, Fp8Teacher, rowwise_fp8
from sra.train.step import build_step, run_step

from conftest import randomize_zero_layers, tiny_model


def test_the_flag_is_refused_on_a_cpu_in_one_line_before_anything_is_written(tmp_path, capsys):
    rc = main(["train", "--data-dir", "digits", "--output-dir", str(tmp_path), "--teacher-fp8", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "--teacher-fp8 needs a GPU with FP8" in err[0] and "cpu" in err[0]
    assert not (tmp_path / "demo").exists()
    # with SRA off the flag means nothing and is not refused
    spec, _ = resolve_spec({"align": {"weight": 0.0, "teacher_fp8": True}}, data=DataShape((1, 8, 8), 10, 64))
    assert not spec.term("align").active


def test_rowwise_scaling_and_the_scaled_matmul_match_their_closed_form():
    g = torch.Generator().manual_seed(0)
    a, w = torch.randn(12, 40, generator=g) * 3, torch.randn(24, 40, generator=g) * 0.05
    a8, sa = rowwise_fp8(a)
    assert a8.dtype == torch.float8_e4m3fn and sa.shape == (12, 1)
    assert torch.allclose(a8.float().abs().amax(1), torch.full((12,), E4M3_MAX))  # each row fills the e4m3 range
    torch.testing.assert_close(a8.float() * sa, a, rtol=2 ** -3, atol=0)  # e4m3: 3 mantissa bits
    linear = torch.nn.Linear(40, 24)
    with torch.no_grad():
        linear.weight.copy_(w)
    fp8 = Fp8Linear(linear)
    w8, sw = rowwise_fp8(w)
    expected = (sa * (a8.float() @ w8.float().T) * sw.T) + linear.bias  # an independent computation in float32
    torch.testing.assert_close(fp8(a).float(), expected, rtol=1e-2, atol=1e-2)  # bf16 output
    assert F.cosine_similarity(fp8(a).float(), a @ w.T + linear.bias, dim=-1).min() > 0.99


def teacher_inputs(model, n=8):
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(n, 1, 8, 8, generator=g), torch.rand(n, generator=g)
    return x, t, torch.randint(0, 3, (n,), generator=g)


def test_fp8_tokens_are_within_cosine_0995_of_the_bf16_teachers():
    teacher = randomize_zero_layers(tiny_model("SiT-T/2", depth=4, hidden_size=64, num_heads=4)).eval()
    x, t, y = teacher_inputs(teacher)
    fp8 = Fp8Teacher(teacher, depth=3)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        reference = teacher.forward_features(x, t, y, depth=3).float()
    tokens = fp8.forward_features(x, t, y, depth=3).float()
    cos = F.cosine_similarity(tokens, reference, dim=-1)  # (N, T)
    assert cos.mean() > 0.995 and not torch.equal(tokens, reference)
    assert len(fp8.linears) == 3 * 5  # qkv, proj, fc1, fc2, adaLN of each FP8 block
    assert all(p1 is p2 for p1, p2 in zip(fp8.mirror.parameters(), teacher.parameters()))  # no weight copies
    with pytest.raises(ValueError, match="holds 3 blocks"):
        fp8.forward_features(x, t, y, depth=4)


def test_weights_are_cast_once_per_ema_update_and_follow_it():
    spec, _ = resolve_spec({"model": "SiT-T/4", "batch_size": 8, "report_to": "none",
                            "align": {"weight": 0.5, "teacher_bf16": True}}, data=DataShape((1, 8, 8), 10, 64))
    torch.manual_seed(0)
    s = build_step(spec, distributed.Context(device=torch.device("cpu")))
    fp8 = Fp8Teacher(s.ema, spec.term("align").block_out_t)
    s.ema_updates.after.append(fp8.refresh)
    s = dataclasses.replace(s, teacher=fp8)
    calls = []
    original = fp8.forward_features
    fp8.forward_features = lambda *a, **k: calls.append(1) or original(*a, **k)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    for step in range(2):
        draws = s.objective.draw(8, (1, 8, 8), "cpu", torch.Generator().manual_seed(step))
        run_step(s, [(x[:4], y[:4], None, 0), (x[4:], y[4:], None, 4)], draws, s.objective.weights(), 0.9, 1.0, {})
    assert len(calls) == 4  # two micro-batches per step, two steps
    assert {linear.casts for linear in fp8.linears} == {3}  # once at build, once per EMA update
    first = fp8.linears[0]
    w8, scale = rowwise_fp8(first.source.weight)
    assert torch.equal(first.weight8.float(), w8.float()) and torch.equal(first.weight_scale, scale)
    ema_qkv = s.ema.blocks[0].attn.qkv.weight
    assert first.source.weight is ema_qkv  # the mirror reads the EMA's own tensor
    assert apply_label_drop(s.model, y, torch.ones(8)).equal(y)
