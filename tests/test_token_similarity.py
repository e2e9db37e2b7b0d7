"""benchmarks/fmnist_token_similarity.py, the block-pair linearity measure the study's deep section runs."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from conftest import randomize_zero_layers, tiny_model

ROOT = Path(__file__).resolve().parent.parent


def test_token_similarity_invariants():
    """adaLN-Zero makes a fresh model's blocks the identity: tokens after blocks 1 and 3 are the same vectors (cos 1,
    a perfect linear map). Once the blocks act, the cosine drops below 1, and a shuffled pairing below the matched
    one."""
    spec = importlib.util.spec_from_file_location("token_sim", ROOT / "benchmarks" / "fmnist_token_similarity.py")
    sim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sim)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 8, 8, generator=g), torch.randint(0, 3, (16,), generator=g)

    fresh = sim.similarity(tiny_model().eval(), x, y, 0.5, 1, 3, seed=0)
    assert abs(fresh["cos"] - 1) < 1e-9 and abs(fresh["cos_centred"] - 1) < 1e-9 and fresh["r2_linear"] > 1 - 1e-6

    model = randomize_zero_layers(tiny_model())
    with torch.no_grad():  # blocks that change the tokens a lot, not the helper's gentle 0.05 scale
        for q in model.blocks.parameters():
            q.mul_(10)
    acted = sim.similarity(model.eval(), x, y, 0.5, 1, 3, seed=0)
    assert acted["cos"] < 0.99 and acted["cos_shuffled"] < acted["cos"] and acted["r2_linear"] < 1 - 1e-3
