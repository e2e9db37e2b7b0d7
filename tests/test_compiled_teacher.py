"""`--compile` compiles the teacher's forward_features: the same tokens as eager, and in-place EMA updates are seen."""
import copy

import torch

import sra
from sra.train.ema import update_ema
from sra.train.parallel import CompiledTeacher


def test_compiled_teacher_equals_eager_and_follows_ema_updates():
    torch.manual_seed(0)
    model = sra.build_model("SiT-T/4", input_size=8, in_channels=1, num_classes=3, depth=3)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    teacher = CompiledTeacher(ema)
    x, t, y = torch.randn(4, 1, 8, 8), torch.rand(4), torch.tensor([0, 1, 2, 3])
    groups = torch.tensor([[0, 1, 0, 1]] * 4)
    t_tok = torch.rand(4, 4)  # per-token times (DTS) with attention separation: a second signature

    def both():
        with torch.no_grad():
            return ((teacher.forward_features(x, t, y, depth=2), ema.forward_features(x, t, y, depth=2)),
                    (teacher.forward_features(x, t_tok, y, depth=2, groups=groups),
                     ema.forward_features(x, t_tok, y, depth=2, groups=groups)))

    before = both()
    for compiled, eager in before:
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # a training step's worth of change, then the EMA update writes ema's weights in place
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    update_ema(ema, model, 0.5)
    after = both()
    for (compiled, eager), (old, _) in zip(after, before):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)
        assert (compiled - old).abs().max() > 1e-2  # the compiled graph read the updated weights
