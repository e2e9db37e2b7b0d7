"""The training step's device behaviour: the on-device skip of non-finite steps (CPU and CUDA), and what differs on
CUDA (tests marked `cuda`, skipped without a GPU): per-image noise, bf16 teacher, compiled student beside an eager
teacher, no host synchronisation inside a step, pinned non-blocking batch transfer. `benchmarks/gpu_check.sh` runs
these on a GPU machine."""
import argparse
import json
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

import sra
from conftest import randomize_zero_layers, tiny_model
from sra.objectives import Objective
from sra.process import FlowProcess
from sra.train.step import Step, optimizer_update

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, CUDA])]


def _setup(device, seed=0):
    torch.manual_seed(seed)
    model = randomize_zero_layers(tiny_model()).to(device)
    ema = tiny_model().to(device).requires_grad_(False)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(_trainable(model), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1, fused=True)
    scaler = torch.amp.GradScaler(device, enabled=False)
    process = FlowProcess()
    # the training step of a plain run (no term owns parameters): fp32, one rank
    step = Step(process, model, ema, model, None, opt, scaler, Objective(process), amp_dtype=None)
    assert step.params == _trainable(model) and not step.fp16
    return model, ema, opt, step


def _trainable(model):
    return [p for p in model.parameters() if p.requires_grad]  # as the loop (pos_embed is fixed)


def _fill_grads(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    for p in _trainable(model):
        p.grad = torch.randn(p.shape, generator=g).to(p.device)


@pytest.mark.parametrize("device", DEVICES)
def test_a_finite_step_is_adamw_with_clipping_written_out(device):
    model, ema, opt, step = _setup(device)
    before = {n: p.detach().clone().double() for n, p in model.named_parameters() if p.requires_grad}
    _fill_grads(model)
    grads = {n: p.grad.detach().clone().double() for n, p in model.named_parameters() if p.requires_grad}
    norm, skipped = optimizer_update(step, max_grad_norm=1.0, decay=0.9)
    assert not bool(skipped)
    # First AdamW step by hand: clip by the global norm, decoupled decay, bias-corrected moments.
    total = math.sqrt(sum(float((g ** 2).sum()) for g in grads.values()))
    assert float(norm) == pytest.approx(total, rel=1e-5)
    coef = min(1.0, 1.0 / (total + 1e-6))
    lr, b1, b2, eps, wd = 1e-2, 0.9, 0.99, 1e-8, 0.1
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        g = grads[n] * coef
        m, v = (1 - b1) * g, (1 - b2) * g * g
        want = before[n] * (1 - lr * wd) - lr * (m / (1 - b1)) / ((v / (1 - b2)).sqrt() + eps)
        torch.testing.assert_close(p.detach().double(), want, rtol=1e-5, atol=1e-6, msg=lambda m: f"{n}: {m}")
        want_ema = 0.9 * before[n] + 0.1 * p.detach().double()
        torch.testing.assert_close(dict(ema.named_parameters())[n].double(), want_ema, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_step_changes_no_weight_moment_or_step_count(device, bad):
    model, ema, opt, step = _setup(device)
    params = step.params
    _fill_grads(model)
    optimizer_update(step, 1.0, 0.9)  # one real step: moments exist
    weights = [p.detach().clone() for p in params]
    state = {k: v.clone() for k, v in opt.state[params[0]].items()}
    _fill_grads(model)
    params[3].grad[0] = bad
    norm, skipped = optimizer_update(step, 1.0, 0.9)
    assert skipped.device.type == device and bool(skipped) and not math.isfinite(float(norm))
    for w, p in zip(weights, params):
        assert torch.equal(w, p.detach())
    for k, v in state.items():
        assert torch.equal(v, opt.state[params[0]][k]), k
    assert all(torch.isfinite(e).all() for e in ema.parameters())


# ----------------------------------------------------------------------------------------------------------------
# CUDA only
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.cuda
@CUDA
@pytest.mark.parametrize("model_name,mask_ratio", [("SiT-T/4", 0.0), ("DiT-T/4", 0.0), ("SiT-T/4", 0.5)],
                         ids=["sit", "dit", "sit-dts-as"])
def test_training_steps_do_not_synchronise_with_the_host(tmp_path, monkeypatch, model_name, mask_ratio):
    """The real loop with SRA_SYNC_DEBUG=1: a synchronising CUDA call inside steps 5-7 raises."""
    from sra.train.config import resolve_spec
    from sra.train.loop import train

    monkeypatch.setenv("SRA_SYNC_DEBUG", "1")
    spec, ds = resolve_spec(dict(model=model_name, data_dir="digits", batch_size=16, max_train_steps=6, log_every=3,
                                 sample_every=6, sample_steps=2, checkpoint_every=6, mixed_precision="bf16",
                                 mix=dict(mask_ratio=(mask_ratio,)), output_dir=str(tmp_path), exp_name="sync",
                                 progress=False), device="cuda")
    run = train(spec, ds)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [3, 6] and all(math.isfinite(r["loss"]) for r in rows)


@pytest.mark.cuda
@CUDA
def test_batches_arrive_pinned_for_non_blocking_copies():
    from sra import distributed
    from sra.data import load_dataset
    from sra.train.config import TrainConfig
    from sra.train.loop import BatchSchedule, local_batches

    ds = load_dataset("digits")
    cfg = TrainConfig(batch_size=8)
    ctx = distributed.Context(device=torch.device("cuda"))
    step, batches = next(local_batches(ds, BatchSchedule(len(ds), 8, 0), 0, 1, ctx, cfg))
    assert all(x.is_pinned() and y.is_pinned() for x, y in batches)


@pytest.mark.cuda
@CUDA
@pytest.mark.parametrize("mode", ["ode", "sde"])
def test_per_image_noise_gives_the_same_images_on_cuda_as_on_cpu(tmp_path, monkeypatch, mode):
    """Per-image generators are CPU generators: the initial and SDE noise, hence the images, do not depend on the
    device (up to float32 arithmetic)."""
    from sra import distributed
    from sra.generate import SamplerOptions, generate

    torch.manual_seed(0)
    m = sra.build_model("SiT-T/4", input_size=8, in_channels=1, num_classes=3, depth=2)
    for p in m.final_layer.parameters():
        nn.init.normal_(p, std=0.1)
    ckpt = tmp_path / "tiny.pt"
    torch.save({"ema": m.state_dict(), "model": m.state_dict(), "args": argparse.Namespace(model="SiT-T/4")}, ckpt)
    images = {}
    for device in ("cpu", "cuda"):  # generate() samples on the process's device
        monkeypatch.setattr(distributed, "init", lambda *a, **k: distributed.Context(device=torch.device(device)))
        res = generate(ckpt, tmp_path / device, num_images=6, seed=1, batch_size=3, progress=False,
                       options=SamplerOptions(mode=mode, num_steps=8))
        with np.load(res.npz) as f:
            images[device] = f["arr_0"].astype(int)
    assert np.abs(images["cpu"] - images["cuda"]).max() <= 1  # one uint8 level for float32 rounding differences


@pytest.mark.cuda
@CUDA
def test_bf16_teacher_is_close_to_fp32_and_keeps_no_activations():
    from sra.objectives.align import teacher_tokens

    torch.manual_seed(0)
    teacher = randomize_zero_layers(tiny_model(depth=4, hidden_size=64)).cuda().requires_grad_(False)
    x, t, y = torch.randn(8, 1, 8, 8, device="cuda"), torch.rand(8, device="cuda"), torch.randint(0, 3, (8,), device="cuda")
    full = teacher_tokens(teacher, x, t, y, depth=3, bf16=False)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    half = teacher_tokens(teacher, x, t, y, depth=3, bf16=True)
    assert half.dtype == torch.float32 and half.grad_fn is None
    # Nothing but the returned tokens (and their bf16 source, freed) stays allocated: no activations are kept.
    assert torch.cuda.memory_allocated() - base <= 2 * half.numel() * 4 + 4096
    rel = (half - full).norm() / full.norm()
    assert rel < 2e-2, float(rel)


@pytest.mark.cuda
@CUDA
def test_compiled_student_with_an_eager_teacher_gives_the_eager_terms():
    from sra.objectives import AlignConfig
    from sra.process.flow import FlowConfig

    torch.manual_seed(0)
    model = randomize_zero_layers(tiny_model(depth=3)).cuda()
    teacher = tiny_model(depth=3).cuda().requires_grad_(False)
    teacher.load_state_dict(model.state_dict())
    obj = Objective(FlowProcess(FlowConfig()),
                    {"align": AlignConfig(weight=0.5, block_out_s=1, block_out_t=2, teacher_bf16=False)})
    x, y = torch.randn(8, 1, 8, 8, device="cuda"), torch.randint(0, 3, (8,), device="cuda")
    draws = obj.draw(8, (1, 8, 8), "cuda", torch.Generator("cuda").manual_seed(0))
    eager = obj(model, teacher, x, y, draws=draws)
    compiled = obj(torch.compile(model), teacher, x, y, draws=draws)
    for k in eager:
        torch.testing.assert_close(compiled[k], eager[k], rtol=1e-4, atol=1e-5)
