"""Dispersive Loss (objectives.dispersive) against its formula written out, and against the authors' public PyTorch
function re-implemented here from its description (pdist, squared, / D, the B x B matrix with its zero diagonal)."""
import math

import pytest
import torch

import sra
from sra.objectives import AlignConfig, DispConfig, Objective, combine
from sra.objectives.dispersive import dispersive_loss
from sra.process.flow import FlowConfig, FlowProcess


def formula(z: torch.Tensor, tau: float) -> torch.Tensor:
    """log(mean_{i,j} exp(-||z_i - z_j||^2 / (D tau))), every pair written out."""
    z = z.double().flatten(1)
    b, d = z.shape
    total = sum(torch.exp(-((z[i] - z[j]) ** 2).sum() / (d * tau)) for i in range(b) for j in range(b))
    return torch.log(total / (b * b))


def authors(z: torch.Tensor) -> torch.Tensor:
    """Their InfoNCE-L2 variant (tau = 1): the B(B-1)/2 pairwise squared distances over D, twice, plus B zeros."""
    z = z.reshape(z.shape[0], -1)
    diff = torch.nn.functional.pdist(z).pow(2) / z.shape[1]
    diff = torch.cat((diff, diff, torch.zeros(z.shape[0], dtype=z.dtype)))
    return torch.log(torch.exp(-diff).mean())


@pytest.mark.parametrize("tau", [1.0, 0.5])
def test_value_and_gradients_match_the_formula(tau):
    torch.manual_seed(0)
    h = torch.randn(6, 4, 8, dtype=torch.float64)
    a, b = h.clone().requires_grad_(), h.clone().requires_grad_()
    ours, want = dispersive_loss(a, tau), formula(b, tau)
    torch.testing.assert_close(ours.double(), want, atol=1e-6, rtol=1e-6)
    ours.backward()
    want.backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5)


def test_matches_the_authors_function():
    torch.manual_seed(1)
    h = torch.randn(8, 16, 32)
    a, b = h.clone().requires_grad_(), h.clone().requires_grad_()
    ours, theirs = dispersive_loss(a, 1.0), authors(b)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-4)


def test_bounds_and_identical_samples():
    z = torch.ones(5, 3, 2)  # all equal: every distance 0, log(1) = 0, the maximum
    assert float(dispersive_loss(z)) == 0.0
    far = torch.arange(5.0)[:, None, None].expand(5, 3, 2) * 100  # far apart: only the diagonal counts
    assert math.isclose(float(dispersive_loss(far)), math.log(5 / 25), rel_tol=1e-6)


def test_term_reads_the_chosen_block_and_joins_the_loss():
    torch.manual_seed(0)
    m = sra.build_model("SiT-T/4", input_size=8, in_channels=1, num_classes=3, depth=3, class_dropout_prob=0.0)
    obj = Objective(FlowProcess(FlowConfig()),
                    {"align": AlignConfig(weight=0.0), "disp": DispConfig(weight=0.25, block=2, tau=0.5)}, patch_size=4)
    x0, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    draws = obj.draw(4, (1, 8, 8), "cpu", torch.Generator().manual_seed(0))
    terms = obj(m, None, x0, y, draws=draws)
    assert list(terms) == ["denoise", "disp"] and obj.names == ("denoise", "disp")
    t = draws["t"].view(-1, 1, 1, 1)
    h = m.forward_features((1 - t) * x0 + t * draws["noise"], draws["t"], y, depth=2)
    torch.testing.assert_close(terms["disp"], dispersive_loss(h, 0.5).expand(4))
    weights = obj.weights()
    assert weights == {"denoise": 1.0, "disp": 0.25}
    torch.testing.assert_close(combine(terms, weights), terms["denoise"].mean() + 0.25 * dispersive_loss(h, 0.5))


def test_flags_and_defaults(tmp_path):
    from sra.cli import build_parser
    from sra.train.config import TrainConfig, given, resolve

    args = build_parser().parse_args(["train", "--disp-weight", "0.25", "--disp-tau", "0.5", "--disp-block", "3"])
    disp = TrainConfig.from_dict(given(args)).term("disp")
    assert (disp.weight, disp.tau, disp.block) == (0.25, 0.5, 3)
    resolved = resolve(TrainConfig(terms={"disp": DispConfig(weight=0.25)}), (1, 8, 8), 10, "cpu")
    assert resolved.term("disp").block == resolved.model_depth and resolved.term("disp").tau == 1.0  # authors' code
    off = resolve(TrainConfig(), (1, 8, 8), 10, "cpu").term("disp")
    assert off.weight == 0 and off.block == 0
    with pytest.raises(ValueError, match="disp-tau"):
        resolve(TrainConfig(terms={"disp": DispConfig(weight=0.25, tau=0.0)}), (1, 8, 8), 10, "cpu")
