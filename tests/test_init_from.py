"""`--init-from` (a new run from another's weights) and `--lr-schedule` (issue 41, item 5).

--init-from: the weights the first update starts from are the source's (the model its online weights, or its EMA
where it has none; the EMA its EMA), read by a hook on the step body before it runs; the optimizer is fresh; a file of
another architecture is refused in one line before the run folder exists; a run that resumes never reads the file.
--lr-schedule: its values against the closed forms, the rates a run logs, and the constant schedule bit-identical to
the loop before schedules existed (tests/data/three_step_weights.json, as tests/test_spec.py checks it)."""
import argparse
import copy
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import sra.train.loop
from sra.checkpoint import load_checkpoint
from sra.cli import main
from sra.train.schedule import learning_rate

from conftest import assert_three_step_reference

TINY = ["--model", "SiT-T/4", "--depth", "2", "--block-out-s", "1", "--block-out-t", "2", "--data-dir", "digits",
        "--batch-size", "16", "--log-every", "1", "--sample-every", "1000", "--sample-steps", "2", "--no-progress",
        "--report-to", "none"]


def train(out, name, *extra) -> int:
    return main(["train", *TINY, "--output-dir", str(out), "--exp-name", name, *extra])


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 2-step run of the tiny model: its online weights and its EMA differ."""
    out = tmp_path_factory.mktemp("source")
    assert train(out, "src", "--max-train-steps", "2") == 0
    ck = load_checkpoint(out / "src" / "checkpoints" / "0000002.pt")
    assert any(not torch.equal(ck["model"][k], ck["ema"][k]) for k in ck["model"])
    return out / "src"


@pytest.fixture
def first_step_weights(monkeypatch):
    """The model's and the EMA's weights as the first step body receives them (before any update)."""
    seen = {}
    real = sra.train.loop.run_step

    def hooked(built, *args, **kwargs):
        if not seen:
            seen["model"] = copy.deepcopy(built.model.state_dict())
            seen["ema"] = copy.deepcopy(built.ema.state_dict())
        return real(built, *args, **kwargs)

    monkeypatch.setattr(sra.train.loop, "run_step", hooked)
    return seen


def assert_states_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k].cpu(), b[k].cpu()), k


def released_file(source: Path, path: Path) -> Path:
    """The source's weights in the authors' layout: 'model', 'ema', 'opt', 'args' (an argparse.Namespace), no spec."""
    ck = load_checkpoint(source / "checkpoints" / "0000002.pt")
    torch.save({"model": ck["model"], "ema": ck["ema"], "opt": {}, "args": argparse.Namespace(path_type="linear")},
               path)
    return path


@pytest.mark.parametrize("kind", ["run folder", "released file", "safetensors export"])
def test_init_from_starts_a_new_run_from_the_sources_weights(tmp_path, source, first_step_weights, capsys, kind):
    ck = load_checkpoint(source / "checkpoints" / "0000002.pt")
    if kind == "run folder":
        given, expect_model = source, ck["model"]  # its online weights
    elif kind == "released file":
        given, expect_model = released_file(source, tmp_path / "released.pt"), ck["model"]
    else:
        given = tmp_path / "export"
        assert main(["export", str(source), "--format", "safetensors", "--output", str(given)]) == 0
        expect_model = ck["ema"]  # an export holds only the EMA
    capsys.readouterr()
    assert train(tmp_path, "new", "--max-train-steps", "2", "--init-from", str(given)) == 0
    assert_states_equal(first_step_weights["model"], expect_model)
    assert_states_equal(first_step_weights["ema"], ck["ema"])
    run = tmp_path / "new"
    assert "from the weights of" in capsys.readouterr().out
    first = load_checkpoint(run / "checkpoints" / "0000002.pt")
    assert first["step"] == 2 and json.loads((run / "config.json").read_text())["init_from"] == str(given)
    # a fresh optimizer: two updates counted, not the source's two plus these
    assert {int(s["step"]) for s in first["opt"]["state"].values()} == {2}
    assert [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_another_architecture_is_refused_before_the_run_folder_exists(tmp_path, source, capsys):
    """The source has 2 blocks; SiT-T/4's default is 6. One line, exit status 2, no folder; --dry-run the same."""
    argv = ["train", "--model", "SiT-T/4", "--data-dir", "digits", "--max-train-steps", "2", "--no-progress",
            "--output-dir", str(tmp_path), "--exp-name", "wrong", "--init-from", str(source)]
    for extra in ([], ["--dry-run"]):
        assert main([*argv, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"sra train: error: --init-from {source / 'checkpoints'}"), err
        assert "not a SiT-T/4 of this run's shape (depth 6" in err[0] and "missing keys (e.g. blocks.2." in err[0]
        assert not (tmp_path / "wrong").exists()
    assert main([*argv[:-1], str(tmp_path / "nothing-here")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nothing-here is neither a run folder nor a checkpoint file" in err[0]
    assert not (tmp_path / "wrong").exists()


def test_a_resumed_run_ignores_init_from_and_another_one_is_a_different_run(tmp_path, source, capsys):
    copied = tmp_path / "copy"
    shutil.copytree(source, copied)
    assert train(tmp_path, "r", "--max-train-steps", "2", "--init-from", str(copied)) == 0
    shutil.rmtree(copied)  # the file is gone: a resumed run does not read it
    assert train(tmp_path, "r", "--max-train-steps", "3", "--init-from", str(copied)) == 0
    assert "resuming" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "r" / "checkpoints" / "0000003.pt")["step"] == 3
    assert train(tmp_path, "r", "--max-train-steps", "3", "--init-from", str(source)) == 2
    assert "differs in: init_from" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# Learning-rate schedules
# ----------------------------------------------------------------------------------------------------------------

def closed_form(schedule, n, lr, warmup, total, lr_min):
    """The schedule written out for n = 1..total (n: the step an update completes), as numpy arrays."""
    n = np.asarray(n, dtype=np.float64)
    warm = lr * np.minimum(1.0, n / warmup) if warmup else np.full_like(n, lr)
    if schedule == "constant":
        return warm
    peak = max(warmup, 1)
    p = np.clip((n - peak) / max(total - peak, 1), 0.0, 1.0)  # no decay when the run ends within its warm-up
    decay = lr_min + (lr - lr_min) * (0.5 + 0.5 * np.cos(np.pi * p) if schedule == "cosine" else 1.0 - p)
    return np.where(n <= peak, warm, decay)


@pytest.mark.parametrize("schedule", ["constant", "cosine", "linear"])
@pytest.mark.parametrize("warmup, total, lr_min", [(0, 50, 0.0), (10, 50, 1e-5), (200, 1200, 0.0), (7, 7, 0.0),
                                                   (9, 4, 0.0), (0, 1, 0.0)])
def test_schedules_follow_their_closed_forms(schedule, warmup, total, lr_min):
    lr = 1e-3
    got = np.array([learning_rate(s, lr=lr, warmup=warmup, schedule=schedule, total=total, lr_min=lr_min)
                    for s in range(total)])
    np.testing.assert_allclose(got, closed_form(schedule, np.arange(1, total + 1), lr, warmup, total, lr_min),
                               rtol=1e-12, atol=0)
    assert got.max() <= lr and got.min() >= lr_min and got[0] > 0
    if schedule != "constant" and total > max(warmup, 1):
        assert got[-1] == lr_min  # the last update uses --lr-min exactly
        peak = max(warmup, 1)
        assert got[peak - 1] == lr and np.all(np.diff(got[peak - 1:]) <= 0)  # from the peak, never up again


def test_schedule_landmarks():
    """Points worked out by hand: the peak at the end of the warm-up; halfway through the decay the cosine and the
    line are both halfway between --lr and --lr-min; a quarter of the way in, the line has kept 3/4 of the span and
    the cosine (1 + cos(pi / 4)) / 2 = (2 + sqrt 2) / 4 of it; --lr-min at the last step."""
    kw = dict(lr=1.0, warmup=10, total=110, lr_min=0.2)
    for schedule in ("cosine", "linear"):
        assert learning_rate(9, schedule=schedule, **kw) == 1.0  # the warm-up's last update: the peak
        assert learning_rate(59, schedule=schedule, **kw) == pytest.approx(0.6, abs=1e-15)  # n = 60: halfway
        assert learning_rate(109, schedule=schedule, **kw) == 0.2
    assert learning_rate(34, schedule="linear", **kw) == pytest.approx(0.2 + 0.8 * 0.75)
    assert learning_rate(34, schedule="cosine", **kw) == pytest.approx(0.2 + 0.8 * (2 + math.sqrt(2)) / 4)
    assert learning_rate(4, schedule="cosine", **kw) == learning_rate(4, schedule="constant", **kw) == 0.5


@pytest.mark.parametrize("warmup", [0, 1, 3, 200])
def test_constant_is_the_loops_formula_before_schedules(warmup):
    """The loop computed `cfg.lr * min(1.0, (step + 1) / cfg.lr_warmup_steps) if cfg.lr_warmup_steps else cfg.lr`:
    the constant schedule returns the same floats, not merely close ones."""
    for lr in (1e-3, 3e-3, 1e-4, 0.1 + 0.2):
        for step in range(0, 400):
            before = lr * min(1.0, (step + 1) / warmup) if warmup else lr
            assert learning_rate(step, lr=lr, warmup=warmup, total=400) == before


def test_a_run_logs_the_rates_of_its_schedule(tmp_path):
    assert train(tmp_path, "lin", "--max-train-steps", "4", "--lr", "1e-3", "--lr-warmup-steps", "1",
                 "--lr-schedule", "linear", "--lr-min", "1e-4") == 0
    rows = [json.loads(x) for x in (tmp_path / "lin" / "metrics.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in rows] == pytest.approx([1e-3, 1e-3 - 0.9e-3 / 3, 1e-3 - 1.8e-3 / 3, 1e-4], rel=1e-12)


def test_schedule_options_are_checked(tmp_path, capsys):
    base = ["train", *TINY, "--output-dir", str(tmp_path), "--exp-name", "x", "--dry-run"]
    for extra, message in [(["--lr-min", "1e-5"], "--lr-min applies to --lr-schedule cosine or linear"),
                           (["--lr-schedule", "cosine", "--lr", "1e-3", "--lr-min", "2e-3"], "--lr-min must be in"),
                           (["--lr-schedule", "cosine", "--lr-min", "-1"], "--lr-min must be in"),
                           (["--lr-schedule", "cosine", "--lr-min", "nan"], "--lr-min must be in")]:
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (extra, err)
    assert not (tmp_path / "x").exists()


def test_a_decaying_run_keeps_its_length_on_resume(tmp_path, capsys):
    """--max-train-steps sets where a cosine or linear decay ends: a finished 2-step cosine run extended to 4 would
    jump its learning rate back up, so it is refused in one line, config.json untouched; the constant schedule
    extends as before."""
    assert train(tmp_path, "cos", "--max-train-steps", "2", "--lr-schedule", "cosine") == 0
    before = (tmp_path / "cos" / "config.json").read_bytes()
    assert train(tmp_path, "cos", "--max-train-steps", "4", "--lr-schedule", "cosine") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "planned for 2 steps" in err[0] and "--init-from" in err[0], err
    assert (tmp_path / "cos" / "config.json").read_bytes() == before
    assert train(tmp_path, "const", "--max-train-steps", "2") == 0
    assert train(tmp_path, "const", "--max-train-steps", "3") == 0




def test_constant_schedule_three_steps_are_bit_identical_to_before(tmp_path):
    """The run of tests/test_spec.py's reference (SiT-T/4, 2 blocks, 3 steps, the tiny preset's 200-step warm-up),
    with the schedule named: the same weights as the commit the reference was made at."""
    assert main(["train", "--data-dir", "digits", "--batch-size", "16", "--log-every", "1", "--sample-every", "1000",
                 "--sample-steps", "2", "--no-progress", "--report-to", "none", "--output-dir", str(tmp_path),
                 "--exp-name", "ref", "--model", "SiT-T/4", "--depth", "2", "--block-out-s", "1", "--block-out-t",
                 "2", "--max-train-steps", "3", "--lr-schedule", "constant", "--lr-min", "0"]) == 0
    assert_three_step_reference(load_checkpoint(tmp_path / "ref" / "checkpoints" / "0000003.pt"), "SiT-T/4")
