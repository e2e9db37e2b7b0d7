"""Fault injection: kills at chosen and random points, signals, a full disk, concurrent runs, divergence, resume
checks, unchecked inputs and messages (issue 18). Each promise of docs/RELIABILITY.md is held by a test here.

Kills run the command in a forked child (no interpreter start-up per run) with SRA_FAULT set: the child SIGKILLs,
SIGSTOPs or signals itself at the N-th time it reaches a named point (sra.runfolder.fault). The invariant after a kill
and a rerun of the same command: the final checkpoint equals an uninterrupted run's, bit for bit, and metrics.jsonl
holds every step exactly once with the uninterrupted run's values."""
import json
import multiprocessing
import os
import random
import shutil
import signal
import sys
import time

import numpy as np
import pytest
import torch

from sra import runfolder
from sra.cli import main
from sra.train import load_checkpoint

STEPS = 7
FAST = ["--model", "SiT-T/4", "--data-dir", "digits", "--batch-size", "8", "--log-every", "1", "--checkpoint-every",
        "3", "--sample-every", "1000", "--sample-steps", "2", "--no-progress", "--max-train-steps", str(STEPS)]


def train_argv(out, name, *extra):
    return ["train", *FAST, "--output-dir", str(out), "--exp-name", name, *extra]


@pytest.fixture(autouse=True)
def _fresh_fault_counts(monkeypatch):
    monkeypatch.delenv("SRA_FAULT", raising=False)
    runfolder._reached.clear()


def _child(argv, fault):
    os.environ["SRA_FAULT"] = fault or ""
    sys.stdout = sys.stderr = open(os.devnull, "w")
    os._exit(main(argv))


def forked(argv, fault=None):
    """The command in a forked child process (started, not awaited)."""
    p = multiprocessing.get_context("fork").Process(target=_child, args=(argv, fault))
    p.start()
    return p


def wait_stopped(p):
    _, status = os.waitpid(p.pid, os.WUNTRACED)
    assert os.WIFSTOPPED(status), status


def rows(run):
    return runfolder.read_jsonl(run / "metrics.jsonl")


def assert_same_run(run, ref):
    """Final checkpoint bit-identical to the uninterrupted run; every step logged once with the same values; no
    temporary file left."""
    a = load_checkpoint(ref / "checkpoints" / f"{STEPS:07d}.pt")
    b = load_checkpoint(run / "checkpoints" / f"{STEPS:07d}.pt")
    assert a["step"] == b["step"] == STEPS
    for part in ("model", "ema"):
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    for name, state in a["opt"]["state"].items():
        for k, v in state.items():
            assert torch.equal(v, b["opt"]["state"][name][k]), (name, k)
    ra, rb = rows(ref), rows(run)
    assert [r["step"] for r in rb] == list(range(1, STEPS + 1))
    for x, y in zip(ra, rb):
        timing = ("images_per_s", "wall_time")
        assert {k: v for k, v in x.items() if k not in timing} == {k: v for k, v in y.items() if k not in timing}
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run."""
    out = tmp_path_factory.mktemp("ref")
    assert main(train_argv(out, "ref")) == 0
    return out / "ref"


# ----------------------------------------------------------------------------------------------------------------
# Kills, signals, a full disk, a second process
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["kill:step:5", "kill:checkpoint-write:2", "random"])
def test_sigkill_then_rerun_equals_uninterrupted_run(tmp_path, reference, fault):
    """Killed after a step between checkpoints (rows 4-5 logged past the checkpoint of step 3), inside the second
    checkpoint write (a half-written temporary file), or at a random moment (seeded delay): the rerun finishes
    the same run."""
    argv = train_argv(tmp_path, "k")
    if fault == "random":
        p = forked(argv)
        time.sleep(random.Random(18).uniform(2.0, 8.0))
        p.kill()
    else:
        p = forked(argv, fault)
    p.join()
    assert p.exitcode == -signal.SIGKILL or p.exitcode == 0  # a slow start may let the random kill come late
    if fault == "kill:checkpoint-write:2":
        assert (tmp_path / "k" / "checkpoints" / "0000006.pt.tmp").exists()  # the half-written file is left
    assert main(argv) == 0
    assert_same_run(tmp_path / "k", reference)


def test_second_process_is_refused_with_the_holders_pid(tmp_path, reference, capsys):
    """A run frozen (SIGSTOP) after step 2 holds the folder; another `sra train` there is refused with one line naming
    its PID and changes nothing; once the holder is killed the OS drops the lock and the rerun finishes the run."""
    argv = train_argv(tmp_path, "c")
    p = forked(argv, "stop:step:2")
    wait_stopped(p)
    before = (tmp_path / "c" / "metrics.jsonl").read_bytes()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"sra train: error: run folder {tmp_path / 'c'} is in use by process {p.pid}; wait for it to "
                   "finish or stop it"]
    assert (tmp_path / "c" / "metrics.jsonl").read_bytes() == before
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    assert main(argv) == 0
    assert_same_run(tmp_path / "c", reference)


@pytest.mark.parametrize("sig, code", [("term", 143), ("int", 130)])
def test_sigterm_and_sigint_save_a_checkpoint(tmp_path, reference, monkeypatch, capsys, sig, code):
    """The signal arrives during step 5 (between checkpoints 3 and 6): a checkpoint of step 5 is written, one line
    says so, the exit status is 128 + the signal; the same command then finishes the run."""
    argv = train_argv(tmp_path, "s")
    monkeypatch.setenv("SRA_FAULT", f"{sig}:step:5")
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"stopped by SIG{sig.upper()} after step 5" in err[0] and "0000005.pt" in err[0]
    assert load_checkpoint(tmp_path / "s" / "checkpoints" / "0000005.pt")["step"] == 5
    monkeypatch.delenv("SRA_FAULT")
    assert main(argv) == 0
    assert_same_run(tmp_path / "s", reference)


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, reference, monkeypatch, capsys):
    """ENOSPC half-way through the second checkpoint: one line, the first checkpoint intact, no temporary file; after
    space is freed the same command finishes the run."""
    argv = train_argv(tmp_path, "f")
    monkeypatch.setenv("SRA_FAULT", "enospc:checkpoint-write:2")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left on device" in err[0] and "0000006.pt" in err[0]
    ckpts = tmp_path / "f" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["0000003.pt"]
    assert load_checkpoint(ckpts / "0000003.pt")["step"] == 3
    monkeypatch.delenv("SRA_FAULT")
    assert main(argv) == 0
    assert_same_run(tmp_path / "f", reference)


# ----------------------------------------------------------------------------------------------------------------
# Divergence
# ----------------------------------------------------------------------------------------------------------------

def finite_on_disk(run):
    files = sorted((run / "checkpoints").glob("*.pt"))
    return files, all(torch.isfinite(v).all() for f in files for part in ("model", "ema")
                      for v in load_checkpoint(f)[part].values())


def test_divergence_stops_with_finite_weights_on_disk(tmp_path, capsys):
    """lr 1e6: the first update blows the weights up (finite; step 2's loss is huge), every loss from step 3 on is
    NaN. The run stops (exit 3) after
    --max-nonfinite-steps consecutive non-finite steps, checked at log steps; the skipped steps are counted, the
    counter is in the checkpoint, every checkpoint on disk is finite."""
    argv = train_argv(tmp_path, "d", "--lr", "1e6", "--lr-warmup-steps", "0", "--max-nonfinite-steps", "4",
                      "--max-train-steps", "20")
    assert main(argv) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "training diverged: 4 consecutive steps" in err[0] and "0000003.pt" in err[0]
    files, finite = finite_on_disk(tmp_path / "d")
    assert [f.name for f in files] == ["0000003.pt"] and finite
    assert load_checkpoint(files[0])["nonfinite"] == {"streak": 1, "total": 1}  # step 3
    assert [r["skipped_steps"] for r in rows(tmp_path / "d")] == [0, 0, 1, 2, 3, 4]  # stopped at step 6


def test_update_to_non_finite_weights_stops_at_once(tmp_path, capsys):
    """Finite gradients, but weight decay 1e39 (inf in float32) turns the weights into inf/NaN in the first update:
    the next check stops the run (exit 3) and nothing non-finite is saved."""
    argv = train_argv(tmp_path, "w", "--lr", "1", "--lr-warmup-steps", "0", "--weight-decay", "1e39",
                      "--checkpoint-every", "1")
    assert main(argv) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the weights became non-finite by step 1" in err[0]
    assert finite_on_disk(tmp_path / "w")[0] == []


def test_lr_inf_is_refused_before_training(tmp_path, capsys):
    assert main(train_argv(tmp_path, "i", "--lr", "inf")) == 2
    assert "--lr must be a finite number > 0 (got inf)" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()


def test_fp16_scaler_skips_are_counted_and_the_counter_resumes(tmp_path):
    """fp16 with lr 1e6: the loss scaler skips steps itself; they are counted (the count was 0 before), and the
    count continues across a resume instead of restarting at 0."""
    argv = train_argv(tmp_path, "h", "--lr", "1e6", "--lr-warmup-steps", "0", "--mixed-precision", "fp16",
                      "--max-nonfinite-steps", "0", "--max-train-steps", "4", "--checkpoint-every", "2")
    assert main(argv[:-2] + ["--max-train-steps", "2"]) == 0
    first = load_checkpoint(tmp_path / "h" / "checkpoints" / "0000002.pt")["nonfinite"]["total"]
    assert main(argv) == 0
    skipped = [r["skipped_steps"] for r in rows(tmp_path / "h")]
    assert first >= 1 and skipped[1] == first and skipped[-1] > first


# ----------------------------------------------------------------------------------------------------------------
# generate and prepare
# ----------------------------------------------------------------------------------------------------------------

def generate_argv(ckpt, out, *extra):
    return ["generate", str(ckpt), "--output-dir", str(out), "--num-images", "6", "--batch-size", "2", "--steps", "2",
            "--no-progress", *extra]


def test_generate_sigkill_lock_and_fingerprint(tmp_path, reference, capsys):
    """Killed while writing image 3 (a half-written temporary PNG), then frozen in another run: the folder is refused
    to a second process with its PID; the rerun equals an uninterrupted generation. A checkpoint overwritten by
    another model's is refused by its contents (the path is the same)."""
    ckpt = tmp_path / "model.pt"
    shutil.copy(reference / "checkpoints" / f"{STEPS:07d}.pt", ckpt)
    assert main(generate_argv(ckpt, tmp_path / "straight")) == 0
    out = tmp_path / "g"
    p = forked(generate_argv(ckpt, out), "kill:image-write:3")
    p.join()
    assert p.exitcode == -signal.SIGKILL and sorted(x.name for x in out.glob("*.png")) == ["000000.png", "000001.png"]
    p = forked(generate_argv(ckpt, out), "stop:image-write:2")
    wait_stopped(p)
    assert main(generate_argv(ckpt, out)) == 2
    assert f"output folder {out} is in use by process {p.pid}" in capsys.readouterr().err
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    assert main(generate_argv(ckpt, out)) == 0
    a, b = np.load(tmp_path / "straight" / "samples.npz"), np.load(out / "samples.npz")
    assert np.array_equal(a["arr_0"], b["arr_0"]) and np.array_equal(a["arr_1"], b["arr_1"])
    assert not [x for x in out.iterdir() if "tmp" in x.name]
    # The same path, other weights: refused, nothing added.
    shutil.copy(reference / "checkpoints" / "0000003.pt", ckpt)
    assert main(generate_argv(ckpt, out, "--num-images", "8")) == 2
    assert "differs in: fingerprint" in capsys.readouterr().err
    assert not (out / "000006.png").exists()
    # A corrupt PNG: one line naming it.
    (out / "000001.png").write_bytes(b"junk")
    shutil.copy(reference / "checkpoints" / f"{STEPS:07d}.pt", ckpt)
    assert main(generate_argv(ckpt, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "000001.png is not a readable PNG" in err[0]


def test_prepare_sigkill_then_rerun_equals_uninterrupted(tmp_path):
    """A tiny VAE; the child is killed between a chunk's rows and its commit mark; the rerun's store equals an
    uninterrupted one byte for byte."""
    pytest.importorskip("diffusers")
    from diffusers import AutoencoderKL
    from PIL import Image

    torch.manual_seed(0)
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), latent_channels=4,
                  norm_num_groups=4, sample_size=16, layers_per_block=1).save_pretrained(tmp_path / "vae")
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / "img" / c).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "img" / c / f"{i}.png")

    def argv(out):
        return ["prepare", str(tmp_path / "img"), str(tmp_path / out), "--vae", str(tmp_path / "vae"),
                "--resolution", "16", "--chunk-size", "2", "--batch-size", "2", "--num-workers", "0", "--no-progress"]

    assert main(argv("straight")) == 0
    p = forked(argv("k"), "kill:chunk-commit:3")
    p.join()
    assert p.exitcode == -signal.SIGKILL
    assert main(argv("k")) == 0
    for f in sorted(os.listdir(tmp_path / "straight")):
        assert (tmp_path / "straight" / f).read_bytes() == (tmp_path / "k" / f).read_bytes() or f == "latents.json", f
    a, b = (json.loads((tmp_path / d / "latents.json").read_text()) for d in ("straight", "k"))
    assert {k: v for k, v in a.items() if k != "source"} == {k: v for k, v in b.items() if k != "source"}
