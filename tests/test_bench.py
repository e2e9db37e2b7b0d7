"""The analytic FLOP count against torch's operator-level counter, and `sra bench` end to end on a tiny preset."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import sra
from sra.train.bench import forward_flops, step_flops
from sra.cli import main


def explicit_attention(q, k, v, *args, **kwargs):
    """Attention as two batched matmuls, so that FlopCounterMode sees them on every backend (it does not count the
    CPU flash kernel behind scaled_dot_product_attention)."""
    a = (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(-1)
    return a @ v


@pytest.fixture
def counted(monkeypatch):
    monkeypatch.setattr(F, "scaled_dot_product_attention", explicit_attention)

    def count(fn) -> int:
        with FlopCounterMode(display=False) as fc:
            fn()
        return fc.get_total_flops()

    return count


def tiny(**kw):
    torch.manual_seed(0)
    return sra.build_model("SiT-T/4", input_size=16, in_channels=3, num_classes=10, **kw)


def inputs(model, n=3):
    x = torch.randn(n, model.in_channels, model.input_size, model.input_size)
    return x, torch.rand(n), torch.randint(0, 10, (n,))


@pytest.mark.parametrize("kw", [{}, {"patch_size": 2, "mlp_ratio": 2.0}])
def test_forward_flops_match_torch_counter(counted, kw):
    model = tiny(**kw)
    x, t, y = inputs(model)
    expected = counted(lambda: model(x, t, y))
    assert forward_flops(model, 3) == pytest.approx(expected, rel=0.01)


def test_teacher_and_head_flops_match_torch_counter(counted):
    model = tiny()
    x, t, y = inputs(model)
    teacher = counted(lambda: model.forward_features(x, t, y, depth=4))
    assert forward_flops(model, 3, depth=4, final=False) == pytest.approx(teacher, rel=0.01)
    h = model.forward_features(x, t, y, depth=2)
    head = counted(lambda: model.ap_head(h))
    assert forward_flops(model, 3, head=True) - forward_flops(model, 3) == pytest.approx(head, rel=0.01)


def test_training_step_is_three_forwards(counted):
    """Forward + backward measured by the counter is within a few % of the 3x-forward convention of step_flops."""
    model = tiny()
    x, t, y = inputs(model)
    measured = counted(lambda: model(x, t, y).square().mean().backward())
    assert step_flops(model, 3, sra=False) == pytest.approx(measured, rel=0.05)
    assert step_flops(model, 3, sra=True, block_out_t=4) > step_flops(model, 3, sra=False)


KEYS = {"step_s_plain", "step_s_sra", "images_per_s_plain", "images_per_s_sra", "tflops_plain", "tflops_sra",
        "flops_plain", "flops_sra", "peak_mem_plain_mb", "peak_mem_sra_mb", "sra_over_plain", "ema_fraction",
        "teacher_fraction", "teacher_bf16", "block_out_s", "block_out_t", "device", "torch"}


def test_bench_cli_prints_json_last_line(capsys):
    rc = main(["bench", "--model", "SiT-T/4", "--input-size", "16", "--in-channels", "1", "--num-classes", "10",
               "--batch-size", "2", "--warmup", "1", "--steps", "2", "--device", "cpu", "--methods", "all"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    result = json.loads(lines[-1])
    assert KEYS <= set(result)
    # the cost, said once right after the first step: M modes (plain, SRA and every method) x 1 warm-up + 2 rounds x
    # (M modes + teacher/EMA); 23 steps with the five methods below
    from sra.train.bench import method_names

    modes = 2 + len(method_names())
    assert lines[0].startswith("warm-up plain 1: ") and lines[1].startswith("estimate: the first batch of 1 step took ")
    assert f"({modes + 2 * (modes + 1)} steps;" in lines[1] and "dispersive" in result["methods"]
    assert sum(line.startswith("estimate: ") for line in lines) == 1
    assert (result["block_out_s"], result["block_out_t"]) == (2, 4)  # the tiny preset's SRA layers
    assert result["step_s_plain"] > 0 and result["step_s_sra"] > 0 and result["sra_over_plain"] > 0
    assert 0 < result["ema_fraction"] and 0 < result["teacher_fraction"]
    assert result["flops_sra"] > result["flops_plain"] > 0 and result["peak_mem_sra_mb"] > 0
    # the family beside plain: every method `--methods all` names, these five among them
    assert set(result["methods"]) == set(method_names()) >= {"sra_dts_as", "dts_as", "self_flow", "repa", "dispersive"}
    assert all(m["step_s"] > 0 and m["over_plain_paired"] > 0 for m in result["methods"].values())


def test_bench_rejects_fp16_with_a_user_error(capsys):
    from sra.train.bench import BenchConfig, run_benchmark

    with pytest.raises(ValueError, match="mixed-precision"):
        run_benchmark(BenchConfig(model="SiT-T/4", mixed_precision="fp16", device="cpu"))
    with pytest.raises(ValueError, match="unknown method"):
        run_benchmark(BenchConfig(model="SiT-T/4", methods=("dtss",), device="cpu"))


def test_bench_flags_are_the_config_fields(capsys):
    """Each BenchConfig field is its flag, declared once: no flags give the dataclass defaults; comma- and
    space-separated methods name the same list."""
    import dataclasses

    from sra.train.bench import BenchConfig

    assert main(["bench", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(dataclasses.asdict(BenchConfig())))
    for methods in (["repa,dispersive"], ["repa", "dispersive"]):
        assert main(["bench", "--dry-run", "--batch-size", "3", "--methods", *methods]) == 0
        got = json.loads(capsys.readouterr().out)
        assert (got["batch_size"], got["methods"]) == (3, ["repa", "dispersive"])


def test_bench_repa_projector_width_is_the_flags():
    """--projector-dim reaches REPA's resolved config (the study's REPA rows use 256, not REPA's 2048)."""
    from sra.train.bench import BenchConfig, bench_spec, run_benchmark

    cfg = BenchConfig(model="SiT-T/4", in_channels=1, num_classes=10, projector_dim=256, methods=("repa",),
                      device="cpu")
    tc = bench_spec(cfg, "cpu")
    assert tc.term("repa").projector_dim == 256 and bench_spec(cfg, "cpu", "repa").term("repa").projector_dim == 256
    assert bench_spec(BenchConfig(model="SiT-T/4", device="cpu"), "cpu").term("repa").projector_dim == 2048
    with pytest.raises(ValueError, match="projector-dim"):
        run_benchmark(BenchConfig(model="SiT-T/4", projector_dim=0, device="cpu"))


def test_bench_depth_builds_the_deeper_model(capsys):
    """--depth times the model `sra train --depth` trains: its FLOP count is that of the preset built with that
    depth (forward_flops is checked against torch's counter above), and the record says the depth."""
    rc = main(["bench", "--model", "SiT-T/4", "--depth", "3", "--block-out-s", "1", "--block-out-t", "3",
               "--input-size", "16", "--in-channels", "3", "--num-classes", "10", "--batch-size", "3", "--warmup",
               "0", "--steps", "1", "--device", "cpu"])
    assert rc == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["depth"] == 3 and (result["block_out_s"], result["block_out_t"]) == (1, 3)
    deeper, preset = tiny(depth=3), tiny()
    assert preset.depth == 6
    assert result["flops_plain"] == step_flops(deeper, 3, sra=False) < step_flops(preset, 3, sra=False)
