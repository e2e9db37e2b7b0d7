"""The Fashion-MNIST study script end to end in --quick mode (2 runs x 30 steps, 100 samples), writing only into a
temporary folder, then resumed: a second call must find everything done and evaluate nothing again."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_study():
    spec = importlib.util.spec_from_file_location("fmnist_study", ROOT / "benchmarks" / "fmnist_study.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


def test_quick_study_end_to_end_and_resume(tmp_path):
    from sra.data.pixels import fashion_mnist_available

    if not fashion_mnist_available():
        pytest.skip("Fashion-MNIST is not installed")
    study = load_study()
    results, docs = tmp_path / "results.jsonl", tmp_path / "docs"
    args = ["--quick", "--jobs", "2", "--poll", "1", "--runs-dir", str(tmp_path / "runs"),
            "--results", str(results), "--docs-dir", str(docs)]
    assert study.main(args) == 0

    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert sorted((r["run"], r["step"]) for r in rows) == [("plain-s0", 15), ("plain-s0", 30),
                                                           ("sra-s0", 15), ("sra-s0", 30)]
    for r in rows:
        assert r["num_samples"] == 100 and r["fd_fmnist"] > 0 and 0 <= r["class_acc"] <= 1
        assert r["align"]["weight"] == (0.0 if r["run"].startswith("plain") else 0.5)
        assert r["ema_half_life_kimg"] == 3.2 and r["ema_warmup"] is False
    # Same seed: identical initialisation and data, so the two runs differ only through the alignment term.
    assert {r["seed"] for r in rows} == {0}

    text = (docs / "RESULTS.md").read_text()
    assert "| 30 |" in text and "Conclusion" in text and "plain-s0" in text
    assert (docs / "fmnist_fd_vs_steps.png").stat().st_size > 0
    assert (docs / "fmnist_samples_plain_vs_sra.png").stat().st_size > 0

    # Resume: nothing left to train or evaluate, the results file is unchanged.
    before = results.read_text()
    assert study.main(args) == 0
    assert results.read_text() == before
    # Nothing was written into the repository's own results or docs.
    assert str(tmp_path) in str(study.parse(args).results)


def test_main_run_names_exclude_ablations():
    study = load_study()
    assert study.is_main_run("plain-s0") and study.is_main_run("sra-s12", "sra")
    # Ablation rows start with "sra-s" too; their losses must not enter the main averages.
    assert not study.is_main_run("sra-sml1-0.2-s0") and not study.is_main_run("sra-s0", "plain")


def test_token_similarity_invariants():
    """adaLN-Zero makes a fresh model's blocks the identity: tokens after blocks 1 and 3 are the same vectors (cos 1,
    a perfect linear map). Once the blocks act, the cosine drops below 1, and a shuffled pairing below the matched one."""
    import torch

    from conftest import randomize_zero_layers, tiny_model

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


def test_deep_runs_train_the_deeper_model_they_name():
    """The deep section's runs resolve to a valid 12-block config with SRA 3 -> 8, probe their student block, and stay
    out of the main comparison; the family runs still probe block 2."""
    study = load_study()
    opts = study.parse(["--only", "deep"])
    runs = study.study_runs(opts)
    assert [r.name for r in runs] == ["plain-d12-s0", "sra-d12-s0", "sra-dts-as-d12-s0"]
    for r in runs:
        cfg = study.train_config(r, opts).resolve((1, 32, 32), 10)
        assert cfg.model_depth == 12 and (cfg.align.block_out_s, cfg.align.block_out_t) == (3, 8)
        assert r.probe and r.probe_block == 3 and not study.is_main_run(r.name)
    assert [study.train_config(r, opts).resolve((1, 32, 32), 10).align.weight for r in runs] == [0.0, 0.5, 0.5]
    assert study.train_config(runs[2], opts).mix.mask_ratio == (0.25,)
    family = study.study_runs(study.parse(["--only", "family"]))
    assert {r.probe_block for r in family} == {2} and all(r.depth is None for r in family)
