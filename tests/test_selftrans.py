"""Self-Transcendence (objectives/selftrans.py): both stages against the authors' loss functions written out here
(csslc/Self-Transcendence @42fde5d loss.py `vae_diffloss` and `selftrans_Loss`, their model's `build_mlp` /
`projectors_final` as the heads), and the two-stage workflow through `sra train`."""
import json

import pytest
import torch
import torch.nn as nn

from sra.checkpoint import load_checkpoint
from sra.cli import main
from sra.objectives import Objective
from sra.objectives.selftrans import HeadConfig, SelfTransConfig, SelfTranscendence, TargetHead, in_range, mlp
from sra.process import DDPMProcess, FlowProcess

from conftest import randomize_zero_layers, tiny_model


def mean_flat(x):
    return torch.mean(x, dim=list(range(1, len(x.size()))))


def reference_head_loss(model_output_fea, model_target, time_input, t_range):
    """loss.py vae_diffloss.__call__ from its `denoising_loss_fea` on (time_input: (B, 1, 1, 1), as they draw it)."""
    a, b = t_range
    t_mask = (time_input >= a) & (time_input <= b)
    t_mask = t_mask.view(-1, *([1] * (model_target.dim() - 1)))
    return mean_flat((model_output_fea - model_target) ** 2) * t_mask


def reference_guided_loss(guided_model_fea, model_output_fea, labels, cfg_scale, time_input, t_range, null):
    """loss.py selftrans_Loss.__call__ from the teacher's features on: cond/uncond halves, guidance, MSE, mask."""
    local_batch_size = model_output_fea.shape[0]
    fea_cond, fea_uncond = guided_model_fea[0:local_batch_size], guided_model_fea[local_batch_size:]
    fea_cfg = fea_uncond + cfg_scale * (fea_cond - fea_uncond)
    guided_loss = mean_flat((model_output_fea - fea_cfg) ** 2)
    a, b = t_range
    t_mask = ((time_input >= a) & (time_input <= b)).view(-1, 1, 1, 1)
    return guided_loss * t_mask


def test_stage_one_head_matches_the_reference_value_and_gradients():
    torch.manual_seed(0)
    model = randomize_zero_layers(tiny_model("SiT-T/2"))
    head_cfg = HeadConfig(weight=0.5, block=2, t_range=(0.0, 1.0), projector_dim=16)
    obj = Objective(FlowProcess(), {"st_head": head_cfg}, patch_size=2,
                    resources={"hidden_size": 32, "in_channels": 1})
    head = obj.term("st_head").module
    x0, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    draws = obj.draw(6, (1, 8, 8), "cpu", torch.Generator().manual_seed(3))
    ours = obj(model, None, x0, y, draws=draws)["st_head"]
    # the reference on the same tensors: their head = build_mlp -> LayerNorm -> Linear -> unpatchify
    t = draws["t"]
    xt = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * draws["noise"]
    target = draws["noise"] - x0
    yd = torch.where(draws["drop"] < 0.1, torch.full_like(y, 3), y)
    h = model(xt, t, yd, feature_depth=2)[1]
    theirs = reference_head_loss(head(h), target, t.view(-1, 1, 1, 1), (0.0, 1.0))
    assert theirs.shape == (6, 1, 1, 6)
    theirs = theirs.reshape(6, 6)[0]  # all in range: every row of their broadcast (B, 1, 1, B) is the per-sample loss
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    g_ours = torch.autograd.grad(ours.mean(), list(head.parameters()), retain_graph=True)
    g_theirs = torch.autograd.grad(theirs.mean(), list(head.parameters()))
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_the_time_mask_is_per_sample_where_the_reference_broadcasts_it_over_the_batch():
    """Documented difference: their (B, 1, 1, 1) mask times a (B,) loss is (B, 1, 1, B), whose mean is
    mean(loss) x (share in range); ours masks each sample. Equal when the whole batch is in range."""
    loss, t = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0.1, 0.5, 0.6, 0.9])
    ours = loss * in_range(t, (0.4, 0.7))
    theirs = loss * ((t >= 0.4) & (t <= 0.7)).view(-1, 1, 1, 1)
    assert theirs.shape == (4, 1, 1, 4)
    assert ours.mean() == pytest.approx((2 + 3) / 4) and theirs.mean() == pytest.approx(loss.mean() * 0.5)
    inside = torch.tensor([0.45, 0.5, 0.6, 0.65])
    assert (loss * in_range(inside, (0.4, 0.7))).mean() == pytest.approx(
        (loss * ((inside >= 0.4) & (inside <= 0.7)).view(-1, 1, 1, 1)).mean().item())


def test_the_head_is_their_mlp_norm_and_linear_unpatchified():
    head = TargetHead(32, 16, 2, 1)
    h = torch.randn(3, 16, 32)
    tokens = head.linear(nn.functional.layer_norm(head.mlp(h), (32,), eps=1e-6))  # (N, T, p^2 C)
    # their unpatchify: (N, h, w, p, p, c) -> einsum nhwpqc->nchpwq
    ref = torch.einsum("nhwpqc->nchpwq", tokens.reshape(3, 4, 4, 2, 2, 1)).reshape(3, 1, 8, 8)
    torch.testing.assert_close(head(h), ref)
    assert [type(m).__name__ for m in mlp(32, 16, 32)] == ["Linear", "SiLU", "Linear", "SiLU", "Linear"]


@pytest.mark.parametrize("process", [FlowProcess(), DDPMProcess()], ids=["flow", "ddpm"])
def test_stage_two_matches_the_reference_value_and_gradients(process, monkeypatch):
    torch.manual_seed(1)
    name = "SiT-T/2" if process.name == "flow" else "DiT-T/2"
    student, teacher = randomize_zero_layers(tiny_model(name), 1), randomize_zero_layers(tiny_model(name), 2).eval()
    cfg = SelfTransConfig(weight=0.5, teacher="unused", block=1, teacher_block=2, cfg_scale=3.0, t_range=(0.0, 1.0),
                          projector_dim=16)

    def fake_init(self, cfg, objective, resources):  # the teacher is built here instead of loaded from a run
        self.cfg, self.process, self.depth = cfg, objective.process, cfg.block
        self.module, self.guide = mlp(32, 16, 32), teacher.requires_grad_(False)

    monkeypatch.setattr(SelfTranscendence, "__init__", fake_init)
    obj = Objective(process, {"selftrans": cfg}, patch_size=2, resources={})
    term = obj.term("selftrans")
    x0, y = torch.randn(5, 1, 8, 8), torch.tensor([0, 1, 2, 1, 0])
    draws = obj.draw(5, (1, 8, 8), "cpu", torch.Generator().manual_seed(4))
    ours = obj(student, None, x0, y, draws=draws)["selftrans"]
    xt, _ = process.corrupt(x0, draws["noise"], draws["t"])
    yd = torch.where(draws["drop"] < 0.1, torch.full_like(y, 3), y)
    h = student(xt, draws["t"], yd, feature_depth=1)[1]
    with torch.no_grad():  # their teacher call: labels and the null label (ours: num_classes; theirs: 1000)
        fea = teacher.forward_features(torch.cat([xt, xt]), torch.cat([draws["t"], draws["t"]]),
                                       torch.cat([y, torch.full_like(y, 3)]), depth=2)
    unit_t = process.unit_time(draws["t"]).view(-1, 1, 1, 1)  # DDPM steps on the [0, 1] scale of the range
    theirs = reference_guided_loss(fea, term.module(h), y, 3.0, unit_t, (0.0, 1.0), 3)
    assert theirs.shape == (5, 1, 1, 5)
    theirs = theirs.reshape(5, 5)[0]  # all in range: every row of their broadcast (B, 1, 1, B) is the per-sample loss
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    params = list(term.module.parameters()) + [p for p in student.parameters() if p.requires_grad]
    g_ours = torch.autograd.grad(ours.mean(), params, retain_graph=True, allow_unused=True)
    g_theirs = torch.autograd.grad(theirs.mean(), params, allow_unused=True)
    for a, b in zip(g_ours, g_theirs):
        if a is None or b is None:
            assert a is None and b is None
            continue
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert not any(p.requires_grad for p in teacher.parameters())


TINY = ["--data-dir", "digits", "--batch-size", "16", "--log-every", "2", "--sample-every", "1000",
        "--sample-steps", "2", "--no-progress", "--report-to", "none", "--sra-weight", "0"]


def train(tmp_path, name, *args):
    return main(["train", *TINY, "--output-dir", str(tmp_path), "--exp-name", name, *args])


@pytest.mark.parametrize("model", ["SiT-T/4", "DiT-T/4"])
def test_two_stages_through_sra_train_resume_bit_identically(tmp_path, model):
    assert train(tmp_path, "stage1", "--model", model, "--st-head-weight", "0.5", "--max-train-steps", "2") == 0
    rows = [json.loads(x) for x in (tmp_path / "stage1" / "metrics.jsonl").read_text().splitlines()]
    assert "st_head" in rows[-1]
    stage2 = ["--model", model, "--selftrans-weight", "0.5", "--selftrans-teacher", str(tmp_path / "stage1"),
              "--checkpoint-every", "2"]
    assert train(tmp_path, "straight", *stage2, "--max-train-steps", "4") == 0
    assert train(tmp_path, "resumed", *stage2, "--max-train-steps", "2") == 0
    assert train(tmp_path, "resumed", *stage2, "--max-train-steps", "4") == 0
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "0000004.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "0000004.pt")
    for part in ("model", "ema", "terms"):
        assert a[part].keys() == b[part].keys() and all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    # the teacher is not saved with the student: only the projection is the term's
    assert set(a["terms"]) == {f"selftrans.{i}.{w}" for i in (0, 2, 4) for w in ("weight", "bias")}
    rows = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["selftrans"] > 0 and "st_head" not in rows[-1]


def test_a_teacher_of_another_model_or_data_is_refused_before_anything_is_written(tmp_path, capsys):
    assert train(tmp_path, "stage1", "--st-head-weight", "0.5", "--max-train-steps", "1") == 0
    teacher = str(tmp_path / "stage1")
    for extra, message in ((["--depth", "4", "--block-out-s", "1"], "trained with depth None"),
                           (["--model", "SiT-T/2"], "trained with model 'SiT-T/4'"),
                           (["--data-dir", str(tmp_path / "nowhere")], None)):
        rc = train(tmp_path, "s2", "--selftrans-weight", "0.5", "--selftrans-teacher", teacher, *extra)
        err = capsys.readouterr().err
        assert rc != 0 and len(err.strip().splitlines()) == 1, err
        assert message is None or message in err, err
        assert not (tmp_path / "s2").exists()
    assert train(tmp_path, "s2", "--selftrans-weight", "0.5") != 0
    assert "needs its stage-1 teacher" in capsys.readouterr().err
