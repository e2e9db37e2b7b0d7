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
from sra.checkpoint import load_checkpoint

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


@pytest.mark.parametrize("sig, code", [("term", 143), ("int", 130), ("hup", 129)])
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
    from PIL import Image

    from conftest import save_tiny_vae

    save_tiny_vae(tmp_path / "vae", sample_size=16)
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


# ----------------------------------------------------------------------------------------------------------------
# The log agrees with the checkpoints; late failures lose no training
# ----------------------------------------------------------------------------------------------------------------

def test_deleted_checkpoints_restart_cleanly(tmp_path, reference):
    """Checkpoints deleted after a finished run: the rerun starts at step 1 and the log holds each step once."""
    argv = train_argv(tmp_path, "del")
    assert main(argv + ["--max-train-steps", "4"]) == 0
    shutil.rmtree(tmp_path / "del" / "checkpoints")
    assert main(argv) == 0
    assert_same_run(tmp_path / "del", reference)


def test_failing_grid_loses_no_training(tmp_path, monkeypatch, capsys):
    """The sample grid (optional) fails at the last step: one warning, exit 0, the step's checkpoint on disk (more
    optional-work failures: tests/test_fault_classes.py)."""
    import sra.train.loop as loop

    def broken(*a, **k):
        raise ValueError("grid failed")

    monkeypatch.setattr(loop, "sample_grid", broken)
    assert main(train_argv(tmp_path, "g", "--max-train-steps", "2")) == 0
    assert "warning: the sample grid of step 2 failed (ValueError: grid failed)" in capsys.readouterr().err
    assert load_checkpoint(tmp_path / "g" / "checkpoints" / "0000002.pt")["step"] == 2


@pytest.mark.parametrize("where", ["samples", "checkpoints"])
def test_unwritable_folders_are_refused_before_training(tmp_path, capsys, where):
    """A file where samples/ or checkpoints/ should be (as root, permissions cannot make a folder unwritable):
    refused in one line before any step; a resumed run's log and checkpoints are untouched."""
    argv = train_argv(tmp_path, "u", "--max-train-steps", "3")
    assert main(argv) == 0
    run = tmp_path / "u"
    shutil.rmtree(run / where)
    (run / where).write_text("in the way")
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    assert main(argv[:-2] + ["--max-train-steps", "6"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"sra train: error: {run / where} is a file, not a folder; move it away"]
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"} == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_checkpoints_are_refused_before_training(tmp_path, capsys):
    argv = train_argv(tmp_path, "ro", "--max-train-steps", "3")
    assert main(argv) == 0
    (tmp_path / "ro" / "checkpoints").chmod(0o555)
    try:
        assert main(argv[:-2] + ["--max-train-steps", "6"]) == 2
        assert "cannot write to" in capsys.readouterr().err
    finally:
        (tmp_path / "ro" / "checkpoints").chmod(0o755)


# ----------------------------------------------------------------------------------------------------------------
# Resume checks
# ----------------------------------------------------------------------------------------------------------------

def test_resume_accepts_the_same_run_however_spelled_and_refuses_other_data(tmp_path, capsys):
    from PIL import Image

    argv = train_argv(tmp_path, "r", "--max-train-steps", "3")
    assert main(argv) == 0
    # The same folder spelled with a trailing slash and with '..': accepted (nothing left to do but the check).
    for spelled in (f"{tmp_path}/", f"{tmp_path}/r/.."):
        assert main(train_argv(spelled, "r", "--max-train-steps", "3")) == 0, capsys.readouterr().err
    # A copied run folder resumes.
    shutil.copytree(tmp_path / "r", tmp_path / "copy")
    assert main(train_argv(tmp_path, "copy", "--max-train-steps", "4")) == 0
    assert load_checkpoint(tmp_path / "copy" / "checkpoints" / "0000004.pt")["step"] == 4
    # Other data of the same shape: refused, and config.json keeps the data the steps so far were trained on.
    other = tmp_path / "other"
    for c in range(10):
        (other / str(c)).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8), 20 * c + i, np.uint8)).save(other / str(c) / f"{i}.png")
    bad = train_argv(tmp_path, "r", "--max-train-steps", "4")
    bad[bad.index("digits")] = str(other)
    assert main(bad) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "was trained on --data-dir digits" in err[0]
    assert json.loads((tmp_path / "r" / "config.json").read_text())["data_dir"] == "digits"


def test_run_without_checkpoint_does_not_block_its_corrected_rerun(tmp_path):
    """Killed at step 1, before any checkpoint: the rerun with another setting starts afresh with a clean log."""
    p = forked(train_argv(tmp_path, "x", "--t-max", "0.3"), "kill:step:1")
    p.join()
    assert p.exitcode == -signal.SIGKILL and json.loads((tmp_path / "x" / "config.json").read_text())
    assert main(train_argv(tmp_path, "x", "--max-train-steps", "2")) == 0
    assert [r["step"] for r in rows(tmp_path / "x")] == [1, 2]
    assert json.loads((tmp_path / "x" / "config.json").read_text())["align"]["t_max"] == 0.2


# ----------------------------------------------------------------------------------------------------------------
# Unchecked inputs, tracebacks, messages: one line each, before any work
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    (["--checkpoint-every", "0"], "--checkpoint-every must be >= 1"),
    (["--checkpoint-every", "-1"], "--checkpoint-every must be >= 1"),
    (["--log-every", "0"], "--log-every must be >= 1"),
    (["--sample-every", "0"], "--sample-every must be >= 1"),
    (["--sample-steps", "0"], "--sample-steps must be >= 1"),
    (["--num-classes", "3"], "smaller than the data's 10 classes"),
    (["--lr-warmup-steps", "-5"], "--lr-warmup-steps must be >= 0"),
    (["--ema-decay", "1.5"], "--ema-decay must be in [0, 1]"),
    (["--sra-weight", "nan"], "alignment weight must be a finite number >= 0"),
    (["--sra-weight", "-1"], "alignment weight must be a finite number >= 0"),
    (["--max-nonfinite-steps", "-1"], "--max-nonfinite-steps must be >= 0"),
])
def test_bad_train_options_are_one_line_before_anything(tmp_path, capsys, args, message):
    for extra in ([], ["--dry-run"]):
        assert main(train_argv(tmp_path, "b", *args, *extra)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "b").exists()


def test_non_square_images_are_refused(tmp_path, capsys):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "img" / c).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 12), np.uint8)).save(tmp_path / "img" / c / "0.png")
    argv = train_argv(tmp_path, "n")
    argv[argv.index("digits")] = str(tmp_path / "img")
    assert main(argv) == 2
    assert "8x12 pixels; the model takes square inputs" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["prepare", "/nonexistent/src", "/tmp/x", "--dry-run"], "source /nonexistent/src does not exist"),
    (["prepare", ".", "/tmp/x", "--chunk-size", "0", "--dry-run"], "must be positive"),
    (["bench", "--batch-size", "0", "--dry-run"], "batch size, input size"),
    (["bench", "--block-out-s", "9", "--dry-run"], "comes after teacher block"),
])
def test_dry_runs_validate(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_sampling_and_probe_inputs(tmp_path, reference, capsys):
    ckpt = reference / "checkpoints" / f"{STEPS:07d}.pt"
    loose = shutil.copy(ckpt, tmp_path / "model.pt")  # a file outside any run folder
    cases = [
        (["sample", str(ckpt), "--cfg-scale", "nan", "--steps", "1"], "cfg scale must be >= 1"),
        (["generate", str(ckpt), "--output-dir", str(tmp_path / "o"), "--cfg-scale", "nan"], "cfg scale must be >= 1"),
        (["sample", str(ckpt), "--num-images", "100000000", "--steps", "1"], "too large (at most 1024)"),
        (["probe", str(ckpt), "--max-train", "-5"], "--max-train and --max-test must be >= 0"),
        (["probe", str(ckpt), "--batch-size", "0"], "--batch-size >= 1"),
        # an output path that is a folder, or lies under a file
        (["sample", str(ckpt), "--steps", "1", "--num-images", "1", "--output", str(tmp_path)], "it is a folder"),
        (["sample", str(ckpt), "--steps", "1", "--num-images", "1", "--output", str(loose / "x.png")],
         "model.pt is a file, not a folder"),
        (["generate", str(ckpt), "--output-dir", str(loose), "--steps", "1"], "is a file"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (argv, err)


def test_config_json_that_is_not_an_object(tmp_path, capsys):
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "config.json").write_text("[1, 2]")
    assert main(train_argv(tmp_path, "j")) == 2
    assert "config.json is not a JSON object" in capsys.readouterr().err


def test_unreadable_checkpoints_get_plain_words(tmp_path, capsys):
    """Junk and pickles of arbitrary objects: one line each, no torch advice to load with weights_only=False."""
    import pickle

    (tmp_path / "junk.pt").write_bytes(b"hello world, this is not a checkpoint" * 10)
    with open(tmp_path / "obj.pt", "wb") as f:
        pickle.dump({"model": {}, "x": np.random.default_rng(0)}, f)
    for name, words in (("junk.pt", "not a PyTorch checkpoint, or a truncated one"),
                        ("obj.pt", "not loaded, since unpickling them could run code")):
        assert main(["sample", str(tmp_path / name)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0] and "weights_only" not in err[0], err
    # the same plain words for a pickled object given as the FID Inception weights
    np.savez(tmp_path / "s.npz", arr_0=np.zeros((2, 8, 8, 3), np.uint8))
    assert main(["eval", str(tmp_path / "s.npz"), str(tmp_path / "s.npz"), "--inception-weights",
                 str(tmp_path / "obj.pt")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read Inception weights" in err[0] and "could run code" in err[0], err
    assert "weights_only" not in err[0] and "Weights only" not in err[0]


def test_help_shows_no_none_defaults(capsys):
    for command in ("train", "prepare", "bench", "probe", "pca", "generate", "sample"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "(default: None)" not in capsys.readouterr().out, command
