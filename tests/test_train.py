"""Training loop and `sra train`: end to end, resume, bad input."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from sra.cli import main
from sra.checkpoint import load_checkpoint

FAST = ["--model", "SiT-T/2", "--data-dir", "digits", "--batch-size", "16", "--log-every", "2",
        "--sample-every", "1000", "--sample-steps", "2", "--no-progress"]


def run_cli(*args):
    return main(["train", *FAST, *args])


def test_cli_end_to_end(tmp_path):
    out = subprocess.run([sys.executable, "-m", "sra", "train", *FAST, "--output-dir", str(tmp_path),
                          "--exp-name", "e2e", "--max-train-steps", "4", "--checkpoint-every", "2"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    run = tmp_path / "e2e"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["align"]["block_out_s"] == 2 and cfg["align"]["block_out_t"] == 4 and cfg["in_channels"] == 1
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and all(np.isfinite(r["align"]) for r in rows)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["0000002.pt", "0000004.pt"]
    assert [p.name for p in (run / "samples").iterdir()] == ["0000004.png"]  # the last step always samples
    ck = load_checkpoint(run / "checkpoints" / "0000004.pt")
    assert ck["step"] == 4 and {"model", "ema", "opt", "scaler", "config"} <= set(ck)


def test_resume_is_bit_identical(tmp_path):
    assert run_cli("--output-dir", str(tmp_path), "--exp-name", "straight", "--max-train-steps", "6") == 0
    assert run_cli("--output-dir", str(tmp_path), "--exp-name", "resumed", "--max-train-steps", "3") == 0
    assert run_cli("--output-dir", str(tmp_path), "--exp-name", "resumed", "--max-train-steps", "6") == 0
    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "0000006.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "0000006.pt")
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    ra = [json.loads(x) for x in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    rb = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    # The last logged interval (steps 5-6) is the same in both runs.
    assert ra[-1]["step"] == rb[-1]["step"] == 6 and ra[-1]["denoise"] == rb[-1]["denoise"]


def test_plain_training_lowers_the_loss(tmp_path):
    assert run_cli("--output-dir", str(tmp_path), "--exp-name", "p", "--max-train-steps", "30", "--sra-weight", "0",
                   "--batch-size", "64", "--log-every", "10") == 0
    rows = [json.loads(x) for x in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()]
    assert "align" not in rows[0]
    assert rows[-1]["denoise"] < rows[0]["denoise"]


def test_depth_overrides_the_preset_and_the_checkpoint_loads_with_it(tmp_path):
    from sra.models.loading import load_model

    assert run_cli("--output-dir", str(tmp_path), "--exp-name", "deep", "--max-train-steps", "2", "--depth", "8",
                   "--block-out-s", "3", "--block-out-t", "7") == 0
    run = tmp_path / "deep"
    assert json.loads((run / "config.json").read_text())["depth"] == 8
    ck = load_checkpoint(run / "checkpoints" / "0000002.pt")
    assert {int(k.split(".")[1]) for k in ck["ema"] if k.startswith("blocks.")} == set(range(8))
    loaded = load_model(run)
    assert loaded.model.depth == 8 and loaded.model.hidden_size == 128  # SiT-T's width, 8 blocks instead of 6
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert np.isfinite(rows[-1]["align"])


def snapshot(folder):
    """Every file's bytes, except the lock file (it holds the PID of its last holder)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.mark.parametrize("args, message", [
    (["--model", "SiT-Q/2"], "unknown model"),
    (["--block-out-s", "3", "--block-out-t", "9"], "outside"),
    (["--block-out-s", "5", "--block-out-t", "3"], "after teacher"),
    (["--depth", "0"], "--depth must be >= 1"),
    (["--depth", "3"], "outside the model's 1..3 blocks"),  # the preset's SRA blocks 2 -> 4
    (["--mixed-precision", "fp8"], None),  # argparse rejects it
])
def test_bad_flags(tmp_path, capsys, args, message):
    if message is None:
        with pytest.raises(SystemExit):
            run_cli("--output-dir", str(tmp_path), *args)
        return
    assert run_cli("--output-dir", str(tmp_path), *args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_bad_data(tmp_path, capsys):
    from PIL import Image

    assert main(["train", "--data-dir", str(tmp_path / "missing"), "--output-dir", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty" / "a").mkdir(parents=True)
    assert main(["train", "--data-dir", str(tmp_path / "empty"), "--output-dir", str(tmp_path)]) == 2
    assert "no images" in capsys.readouterr().err
    folder = tmp_path / "imgs"
    for c in ("cat", "dog"):
        (folder / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(folder / c / f"{i}.png")
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(folder / "dog" / "odd.png")
    assert main(["train", "--data-dir", str(folder), "--output-dir", str(tmp_path)]) == 2
    assert "first image" in capsys.readouterr().err


def test_run_folder_is_never_clobbered(tmp_path, capsys):
    assert run_cli("--output-dir", str(tmp_path), "--exp-name", "r", "--max-train-steps", "2") == 0
    run = tmp_path / "r"
    before = snapshot(run)
    # Another configuration in the same folder: refused.
    assert run_cli("--output-dir", str(tmp_path), "--exp-name", "r", "--max-train-steps", "4", "--t-max", "0.3") == 2
    assert "different run" in capsys.readouterr().err
    assert snapshot(run) == before
    # A checkpoint of another model in the folder: refused with one line.
    other = tmp_path / "o"
    assert run_cli("--output-dir", str(tmp_path), "--exp-name", "o", "--max-train-steps", "2",
                   "--model", "SiT-T/4") == 0
    shutil.copy(other / "checkpoints" / "0000002.pt", run / "checkpoints" / "0000003.pt")
    before = snapshot(run)
    assert run_cli("--output-dir", str(tmp_path), "--exp-name", "r", "--max-train-steps", "4") == 2
    err = capsys.readouterr().err.strip().splitlines()
    # SiT-T/4 vs SiT-T/2 on 8x8 inputs: 4 vs 16 tokens; the first mismatching tensor is named with both shapes.
    assert len(err) == 1 and "does not fit" in err[0] and "pos_embed is (1, 4, 128) in the checkpoint, " \
        "(1, 16, 128) in the model" in err[0]
    assert snapshot(run) == before
    # A truncated newest checkpoint: skipped with a warning; the run resumes from the previous one (step 2).
    ck = run / "checkpoints" / "0000003.pt"
    ck.write_bytes(ck.read_bytes()[: 1000])
    assert run_cli("--output-dir", str(tmp_path), "--exp-name", "r", "--max-train-steps", "4") == 0
    err = capsys.readouterr().err
    assert "cannot read checkpoint" in err and "0000003.pt" in err and "resuming from the previous checkpoint" in err
    assert load_checkpoint(run / "checkpoints" / "0000004.pt")["step"] == 4


def test_dry_run_prints_resolved_config(capsys):
    assert main(["train", "--data-dir", "digits", "--model", "SiT-B/2", "--dry-run"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["lr"] == 1e-4 and cfg["ema_decay"] == 0.9999 and cfg["align"]["block_out_s"] == 3
    from sra.objectives.align import fast_bf16

    native = fast_bf16(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    assert cfg["align"]["block_out_t"] == 8 and cfg["align"]["teacher_bf16"] is native and cfg["input_size"] == 8


def test_dry_run_names_the_data_an_unset_data_dir_will_use(capsys):
    from sra.data import fashion_mnist_available, load_dataset
    from sra.data.pixels import FASHION_MNIST_DIRS

    assert main(["train", "--dry-run"]) == 0
    shown = json.loads(capsys.readouterr().out)["data_dir"]
    assert shown == (FASHION_MNIST_DIRS[0] if fashion_mnist_available() else "digits")  # not null
    assert len(load_dataset(shown, "test")) == len(load_dataset(None, "test"))  # the same data


def test_a_finished_runs_rerun_says_so_and_draws_no_progress_bar(tmp_path, capsys):
    flags = [f for f in FAST if f != "--no-progress"] + ["--output-dir", str(tmp_path), "--max-train-steps", "1"]
    assert main(["train", *flags]) == 0
    capsys.readouterr()
    assert main(["train", *flags]) == 0
    captured = capsys.readouterr()
    assert "has reached --max-train-steps 1: nothing to train" in captured.out
    assert "step/s" not in captured.err and "100%" not in captured.err  # the bar was drawn twice here


def test_in_training_evaluation_needs_fashion_mnist(tmp_path, capsys):
    assert run_cli("--output-dir", str(tmp_path), "--eval-every", "2", "--max-train-steps", "2") == 2
    assert "Fashion-MNIST" in capsys.readouterr().err


def test_threads_reach_torch_before_the_step_is_built(tmp_path, monkeypatch):
    """--threads N sets torch's intra-op threads for the run; 0 leaves torch's default."""
    from sra.train import loop

    seen, build = [], loop.build_step
    monkeypatch.setattr(loop, "build_step", lambda *a, **k: (seen.append(torch.get_num_threads()), build(*a, **k))[1])
    default = torch.get_num_threads()
    want = 2 if default == 1 else 1
    try:
        assert run_cli("--output-dir", str(tmp_path), "--max-train-steps", "1", "--threads", str(want)) == 0
        assert run_cli("--output-dir", str(tmp_path), "--max-train-steps", "1", "--exp-name", "default") == 0
    finally:
        torch.set_num_threads(default)
    assert seen == [want, want]  # a process's threads stay set: 0 changes nothing
    assert json.loads((tmp_path / "demo" / "config.json").read_text())["threads"] == want
