"""Fault classes of issue 26, one section each (docs/RELIABILITY.md names the test that holds each promise):
optional work never ends a run; no path escapes its folder and no command writes into a training run's records;
resume checks that do not depend on config.json; every writing command fails in one line on a read-only or full
file system (real mounts in a private mount namespace, skipped where that is not allowed); config files and flags
that used to be accepted or to end in a traceback."""
import ctypes
import errno
import json
import multiprocessing
import os
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from sra import runfolder
from sra.cli import main
from sra.checkpoint import load_checkpoint

FAST = ["--model", "SiT-T/4", "--data-dir", "digits", "--batch-size", "8", "--log-every", "1", "--checkpoint-every",
        "2", "--sample-every", "1000", "--sample-steps", "1", "--no-progress", "--report-to", "none",
        "--max-train-steps", "3"]


def train_argv(out, name, *extra):
    return ["train", *FAST, "--output-dir", str(out), "--exp-name", name, *extra]


def one_line(capsys, *words):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and all(w in err[0] for w in words), err
    return err[0]


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


@pytest.fixture(autouse=True)
def _fresh_fault_counts(monkeypatch):
    monkeypatch.delenv("SRA_FAULT", raising=False)
    runfolder._reached.clear()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 3-step run (checkpoints 2 and 3)."""
    out = tmp_path_factory.mktemp("trained")
    assert main(train_argv(out, "run")) == 0
    return out / "run"


# ----------------------------------------------------------------------------------------------------------------
# 1. Optional work warns and training goes on; what can be checked at start is
# ----------------------------------------------------------------------------------------------------------------

def test_failing_grids_and_tracking_warn_and_training_goes_on(tmp_path, monkeypatch, capsys):
    """Every sample grid fails and the TensorBoard writer fails at its first write (a read-only or full tensorboard/):
    one warning per failed grid, one for tracking (then off), exit 0, every step logged, the last checkpoint saved."""
    pytest.importorskip("tensorboard")
    import sra.train.loop as loop
    from torch.utils.tensorboard import SummaryWriter

    def read_only(*a, **k):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), "samples/0000001.png")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(loop, "sample_grid", read_only)
    monkeypatch.setattr(SummaryWriter, "add_scalar", full)
    assert main(train_argv(tmp_path, "o", "--sample-every", "1", "--report-to", "tensorboard")) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert [e for e in err if "sample grid" in e] == [
        f"warning: the sample grid of step {s} failed (OSError: [Errno 30] Read-only file system: "
        f"'samples/0000001.png'); training continues" for s in (1, 2, 3)]
    assert len([e for e in err if "tensorboard logging failed" in e]) == 1 and len(err) == 4, err
    assert [r["step"] for r in runfolder.read_jsonl(tmp_path / "o" / "metrics.jsonl")] == [1, 2, 3]
    assert load_checkpoint(tmp_path / "o" / "checkpoints" / "0000003.pt")["step"] == 3


def test_failing_evaluation_warns_and_training_goes_on(tmp_path, monkeypatch, capsys):
    """The in-training evaluation raises at every evaluation step: a warning each time, training finishes."""
    import sra.evaluation.fmnist as fmnist

    monkeypatch.setattr(fmnist, "fmnist_scorer", lambda *a, **k: None)
    monkeypatch.setattr(fmnist, "evaluate_fmnist_for_training",
                        lambda *a, **k: (_ for _ in ()).throw(ValueError("need at least 2 feature vectors")))
    import sra.train.config as config

    def digits_as_fashion_mnist(data_dir):  # the FD-FMNIST branch without the 60 000 images
        dataset = real(data_dir)
        dataset.name = "fashion-mnist"
        return dataset

    real = config.load_dataset  # the data is loaded once, where the spec is resolved (resolve_spec)
    monkeypatch.setattr(config, "load_dataset", digits_as_fashion_mnist)
    assert main(train_argv(tmp_path, "e", "--eval-every", "2", "--eval-num", "4")) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"warning: the evaluation of step {s} failed (ValueError: need at least 2 feature vectors); "
                   "training continues" for s in (2, 3)]
    assert load_checkpoint(tmp_path / "e" / "checkpoints" / "0000003.pt")["step"] == 3


def test_evaluation_inputs_are_checked_at_start(tmp_path, capsys):
    """--eval-num 1 and a missing --eval-ref are refused before anything (also under --dry-run); reference
    statistics of the wrong dimension or with NaN are refused when the evaluator is set up, before step 1."""
    for extra, words in ((["--eval-every", "2", "--eval-num", "1"], "--eval-num must be >= 2"),
                         (["--eval-every", "2", "--eval-ref", str(tmp_path / "no.npz")], "does not exist")):
        for dry in ([], ["--dry-run"]):
            assert main(train_argv(tmp_path, "x", *extra, *dry)) == 2
            one_line(capsys, words)
    assert not (tmp_path / "x").exists()
    from sra.evaluation.training_fid import TrainingFID

    fake = SimpleNamespace(net=SimpleNamespace(preprocessing="pytorch-fid"))
    for name, mu, sigma, words in (("small", np.zeros(10), np.eye(10), "not the Inception pool features'"),
                                   ("nan", np.full(2048, np.nan), np.eye(2048), "NaN or infinite")):
        np.savez(tmp_path / f"{name}.npz", mu=mu, sigma=sigma)
        with pytest.raises(ValueError, match=words):
            TrainingFID.reference_stats(fake, str(tmp_path / f"{name}.npz"))


# ----------------------------------------------------------------------------------------------------------------
# 2. Paths that leave their folder; no command writes into a training run's records
# ----------------------------------------------------------------------------------------------------------------

def test_symlinked_lock_and_checkpoints_are_refused(tmp_path, trained, capsys):
    """A .lock that is a symbolic link (its target would be truncated) and a checkpoints/ linked into another run
    (that run would be resumed and written into): refused in one line, the targets untouched."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "l").mkdir()
    (tmp_path / "l" / ".lock").symlink_to(victim)
    assert main(train_argv(tmp_path, "l")) == 2
    one_line(capsys, ".lock is a symbolic link")
    assert victim.read_text() == "precious"

    before = snapshot(trained)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "checkpoints").symlink_to(trained / "checkpoints")
    assert main(train_argv(tmp_path, "c", "--max-train-steps", "5")) == 2
    one_line(capsys, "checkpoints is a symbolic link")
    assert snapshot(trained) == before


@pytest.mark.parametrize("name, words", [("../escaped", "inside --output-dir"), ("/abs", "inside --output-dir"),
                                         ("a/../../b", "inside --output-dir"), ("x" * 300, "too long (300 bytes")])
def test_exp_name_stays_inside_output_dir(tmp_path, capsys, name, words):
    for dry in ([], ["--dry-run"]):
        assert main(train_argv(tmp_path / "out", name, *dry)) == 2
        one_line(capsys, words)
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "out").exists()


def test_no_command_writes_into_a_run_folders_records(tmp_path, trained, capsys):
    """generate, export, sample, plot, eval, probe and prepare aimed at a training run folder or its records are
    refused in one line before any work; nothing in the run changes. Their default outputs inside a run (export-*/,
    analysis/) stay allowed."""
    ckpt = trained / "checkpoints" / "0000003.pt"
    before = snapshot(trained)
    cases = [
        ["generate", str(ckpt), "--output-dir", str(trained / "checkpoints"), "--num-images", "2", "--steps", "1"],
        ["generate", str(ckpt), "--output-dir", str(trained), "--num-images", "2", "--steps", "1"],
        ["export", str(trained), "--output", str(trained)],
        ["sample", str(trained), "--steps", "1", "--num-images", "1", "--output", str(ckpt)],
        ["sample", str(trained), "--steps", "1", "--num-images", "1", "--output", str(trained / "config.json")],
        ["plot", str(trained), "--output", str(trained / "metrics.jsonl")],
        ["eval", str(tmp_path / "s.npz"), str(tmp_path / "r.npz"), "--output", str(trained / "config.json")],
        ["probe", str(trained), "--output-dir", str(trained / "samples")],
        ["prepare", str(tmp_path), str(trained / "checkpoints" / "store")],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        one_line(capsys, "only `sra train` writes there")
        assert snapshot(trained) == before, argv
    # The runs's own subfolders for other outputs remain fine.
    assert main(["export", str(trained)]) == 0
    assert (trained / "export-safetensors" / "model.safetensors").is_file()


# ----------------------------------------------------------------------------------------------------------------
# 3. Resume checks that do not depend on config.json; --max-train-steps; --keep-last corner
# ----------------------------------------------------------------------------------------------------------------

def test_resume_without_config_json_compares_with_the_checkpoint(tmp_path, capsys):
    argv = train_argv(tmp_path, "r")
    assert main(argv) == 0
    (tmp_path / "r" / "config.json").unlink()
    for flag, value in (("--lr", "0.5"), ("--ema-decay", "0.5")):
        assert main(argv + ["--max-train-steps", "4", flag, value]) == 2
        one_line(capsys, "holds a different run", flag[2:].replace("-", "_"))
        assert not (tmp_path / "r" / "config.json").exists()
    assert main(argv + ["--max-train-steps", "4"]) == 0
    assert load_checkpoint(tmp_path / "r" / "checkpoints" / "0000004.pt")["step"] == 4


def test_max_train_steps_below_the_run_is_refused_and_changes_nothing(tmp_path, trained, capsys):
    before = snapshot(trained)
    argv = train_argv(trained.parent, "run")
    assert main(argv + ["--max-train-steps", "2"]) == 2
    one_line(capsys, "--max-train-steps 2 is below the step this run reached (3")
    assert main(argv + ["--max-train-steps", "0"]) == 2
    one_line(capsys, "--max-train-steps must be >= 1")
    assert snapshot(trained) == before


def test_only_checkpoint_unreadable_is_refused_not_restarted(tmp_path, capsys):
    """--keep-last 1 with its one checkpoint corrupt: no talk of a previous checkpoint, no emptied metrics.jsonl."""
    argv = train_argv(tmp_path, "k", "--keep-last", "1")
    assert main(argv) == 0
    ck = tmp_path / "k" / "checkpoints" / "0000003.pt"
    ck.write_bytes(ck.read_bytes()[:1000])
    before = snapshot(tmp_path / "k")
    assert main(argv + ["--max-train-steps", "4"]) == 2
    line = one_line(capsys, "cannot read checkpoint", "no earlier checkpoint is readable")
    assert "resuming from the previous" not in line
    assert snapshot(tmp_path / "k") == before


# ----------------------------------------------------------------------------------------------------------------
# 5. Read-only and full file systems: one line naming the path, for every command that writes
# ----------------------------------------------------------------------------------------------------------------

CLONE_NEWNS, MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20000, 1, 32, 4096, 16384, 1 << 18
CANNOT = 77  # the child could not set up the mount (not root, no namespaces): the test is skipped


def _confined(argv, folder, mode, err_path):
    """Child: a private mount namespace in which `folder` is read-only, or an 8 KiB tmpfs (full after two pages)."""
    libc = ctypes.CDLL(None, use_errno=True)
    f = str(folder).encode()
    if libc.unshare(CLONE_NEWNS) or libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None):
        os._exit(CANNOT)
    if mode == "read-only":
        ok = not libc.mount(f, f, None, MS_BIND, None) and \
            not libc.mount(None, f, None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)
    else:
        ok = not libc.mount(b"tmpfs", f, b"tmpfs", 0, b"size=8k")
    if not ok:
        os._exit(CANNOT)
    sys.stdout = open(os.devnull, "w")
    sys.stderr = open(err_path, "w")
    code = main(argv)
    sys.stderr.flush()
    os._exit(code)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, trained):
    """What the commands read: the trained run, 8x8 images in two classes, a tiny VAE (when diffusers is there)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / "img" / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / "img" / c / f"{i}.png")
    vae = None
    try:
        from conftest import save_tiny_vae

        vae = save_tiny_vae(root / "vae", sample_size=16)
    except ImportError:
        pass
    return SimpleNamespace(run=trained, ckpt=trained / "checkpoints" / "0000003.pt", img=root / "img", vae=vae)


WRITERS = {
    "train": lambda i, o: train_argv(o, "t"),
    "generate": lambda i, o: ["generate", str(i.ckpt), "--output-dir", str(o / "g"), "--num-images", "2",
                              "--steps", "1", "--no-progress"],
    "sample": lambda i, o: ["sample", str(i.ckpt), "--steps", "1", "--num-images", "64", "--output", str(o / "s.png")],
    "export": lambda i, o: ["export", str(i.ckpt), "--output", str(o / "e")],
    "plot": lambda i, o: ["plot", str(i.run), "--output", str(o / "c.png")],
    "probe": lambda i, o: ["probe", str(i.ckpt), "--data-dir", "digits", "--blocks", "1", "--times", "0.5",
                           "--max-train", "40", "--max-test", "20", "--output-dir", str(o / "p"), "--no-progress"],
    "eval": lambda i, o: ["eval", str(o / "missing.npz"), "--save-stats", str(o / "stats.npz")],
    "prepare": lambda i, o: ["prepare", str(i.img), str(o / "store"), "--vae", str(i.vae), "--resolution", "16",
                             "--chunk-size", "2", "--batch-size", "2", "--num-workers", "0", "--no-progress"],
}
# Full: eval refuses its missing input first; sample's one small grid fits in the 8 KiB (generate covers PNGs).
FULL = ("train", "generate", "export", "plot", "probe", "prepare")


@pytest.mark.parametrize("mode, command", [("read-only", c) for c in WRITERS] + [("full", c) for c in FULL])
def test_read_only_and_full_file_systems_fail_in_one_line(tmp_path, inputs, mode, command):
    if command == "prepare" and inputs.vae is None:
        pytest.skip("needs diffusers")
    out = tmp_path / "out"
    out.mkdir()
    err_path = tmp_path / "stderr"
    p = multiprocessing.get_context("fork").Process(
        target=_confined, args=(WRITERS[command](inputs, out), out, mode, err_path))
    p.start()
    p.join()
    if p.exitcode == CANNOT:
        pytest.skip("cannot mount in a private namespace here (needs root)")
    err = err_path.read_text().strip().splitlines()
    assert p.exitcode == 2 and len(err) == 1, (p.exitcode, err)
    reason = "read-only file system" if mode == "read-only" else "no space left on device"
    assert str(out) in err[0] and reason in err[0].lower() and "Traceback" not in err[0], err


# ----------------------------------------------------------------------------------------------------------------
# 6-11. Config files, plot rows, the run folder's other paths, flags that were accepted
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, text, words", [
    ("inf.yaml", "keep_every: .inf\n", "option keep_every: expected int, got inf"),
    ("big.json", '{"keep_every": 1e400}', "option keep_every: expected int, got inf"),
    ("lr.json", '{"lr": 1e400}', "--lr must be a finite number > 0 (got inf)"),
    ("nan.yaml", "mix:\n  full_sample_prob: .nan\n", "--full-sample-prob must be finite (got nan)"),
    ("dup.yaml", "lr: 0.1\nlr: 0.2\n", "option 'lr' is given twice"),
    ("dup2.yaml", "align:\n  weight: 0.1\n  weight: 0.2\n", "option 'weight' is given twice"),
    ("dup.json", '{"lr": 0.1, "lr": 0.2}', "option 'lr' is given twice"),
])
def test_config_files_refused_in_one_line(tmp_path, capsys, name, text, words):
    (tmp_path / name).write_text(text)
    assert main(train_argv(tmp_path, "f", "--config", str(tmp_path / name), "--dry-run")) == 2
    one_line(capsys, words)


def test_plot_skips_malformed_rows_with_a_count(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    good = [{"step": s, "loss": 1.0 / s, "wall_time": 1e9 + s} for s in (1, 2, 3)]
    bad = ["[1, 2]", '"text"', '{"step": "two", "loss": 1}', '{"step": 4, "wall_time": "noon", "loss": 1}',
           '{"step": 5, "loss": "high"}', '{"loss": 1}']
    (run / "metrics.jsonl").write_text("\n".join([json.dumps(r) for r in good] + bad) + '\n{"step": 6, "lo')
    assert main(["plot", str(run), "--output", str(tmp_path / "c.png")]) == 0
    assert one_line(capsys, "skipped 7 malformed rows") == f"warning: skipped 7 malformed rows in {run}"
    assert (tmp_path / "c.png").stat().st_size > 0


def test_tensorboard_path_that_is_a_file_is_refused_before_training(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    (tmp_path / "tb").mkdir()
    (tmp_path / "tb" / "tensorboard").write_text("in the way")
    assert main(train_argv(tmp_path, "tb", "--report-to", "tensorboard")) == 2
    one_line(capsys, "tensorboard is a file, not a folder")
    assert not (tmp_path / "tb" / "checkpoints").exists() or not any((tmp_path / "tb" / "checkpoints").iterdir())


@pytest.mark.parametrize("args, words", [
    (["--batch-size", "10", "--grad-accum", "3"], "--batch-size 10 is not divisible by --grad-accum 3"),
    (["--batch-size", "5000"], "items, fewer than the batch size 5000"),
    (["--seed", str(2 ** 64)], "--seed must be in [0, 2^63)"),
    (["--seed", "-1"], "--seed must be in [0, 2^63)"),
    (["--mask-ratio", "nan"], "--mask-ratio must be finite"),
    (["--mask-ratio", "0.5", "nan"], "--mask-ratio must be finite"),
    (["--mask-ratio", "0.3", "inf"], "--mask-ratio must be finite"),
    (["--repa-weight", "-0.5"], "--repa-weight must be a finite number >= 0"),
    (["--repa-weight", "nan"], "--repa-weight must be a finite number >= 0"),
    (["--repa-weight", "inf"], "--repa-weight must be a finite number >= 0"),
    (["--t-max", "inf"], "t_max must be in [0, 1]"),
    (["--input-size", "0"], "--input-size must be >= 1, or left unset"),
    (["--preset", ""], "preset"),
    (["--model", "DiT-T/4", "--path-type", "cosine"], "--path-type applies to the flow process only; DiT-T/4 trains with the ddpm process"),
])
def test_dry_run_refuses_what_the_run_refuses(tmp_path, capsys, args, words):
    for dry in (["--dry-run"], []):
        assert main(train_argv(tmp_path, "d", *args, *dry)) == 2, dry
        one_line(capsys, words)
    assert not (tmp_path / "d").exists()


def test_default_data_named_explicitly_resumes(tmp_path, capsys):
    """A run started without --data-dir resumes with the default data spelled out (it is not 'moved')."""
    from sra.data.pixels import FASHION_MNIST_DIRS, fashion_mnist_available
    from sra.train.folder import same_data

    default = FASHION_MNIST_DIRS[0] if fashion_mnist_available() else "digits"
    assert same_data(None, default) and same_data(default, None) and same_data(None, None)
    assert not same_data(None, str(tmp_path))


@pytest.mark.parametrize("header", ['{"format": "sra-lat', "", '{"format": "someone-else"}'])
def test_a_store_with_an_unreadable_header_is_named_as_such(tmp_path, capsys, header):
    """A latents.json that is torn, empty or foreign is reported as the store's header, in one line, not as a folder
    without images; nothing is written."""
    (tmp_path / "latents.json").write_text(header)
    before = snapshot(tmp_path)
    assert main(train_argv(tmp_path / "out", "run", "--data-dir", str(tmp_path))) != 0
    one_line(capsys, "latents.json", "not a readable sra latent-store header")
    assert snapshot(tmp_path) == before


# ----------------------------------------------------------------------------------------------------------------
# 12. Exports write only inside their folder; architectures and weights read from files are checked (issue 40)
# ----------------------------------------------------------------------------------------------------------------

def tiny_checkpoint(path, name="SiT-T/4", state_edit=None, **kw):
    """A random tiny model's weights saved as {'ema': ..., 'step': 1} at `path` (no run spec); `state_edit(state)`
    tampers with them first. Returns the model."""
    import torch

    from conftest import randomize_zero_layers
    from sra.checkpoint import save_checkpoint
    from sra.models import build_model

    model = randomize_zero_layers(build_model(name, **{"input_size": 8, "in_channels": 1, "num_classes": 3, **kw}))
    state = model.state_dict()
    if state_edit is not None:
        state_edit(state)
    save_checkpoint({"ema": state, "step": 1}, path)
    return model


EXPORT_LINKS = [  # (--format, checkpoint, the path under OUT that is a link, is the target a folder)
    ("safetensors", "sit", "", True), ("safetensors", "sit", "README.md", False),
    ("safetensors", "sit", "config.json", False), ("safetensors", "sit", "model.safetensors", False),
    ("diffusers", "sit", "transformer", True), ("diffusers", "sit", "pipeline_sit.py", False),
    ("diffusers", "sit", "model_index.json", False), ("diffusers", "sit", "transformer/config.json", False),
    ("diffusers", "latent", "vae", True), ("diffusers", "dit", "scheduler", True),
    ("diffusers", "dit", "transformer/diffusion_pytorch_model.safetensors", False),
]


@pytest.mark.parametrize("fmt, kind, link, folder", EXPORT_LINKS)
def test_exports_never_write_through_a_symbolic_link(tmp_path, inputs, capsys, fmt, kind, link, folder):
    """OUT itself, a file or a folder under OUT that is a symbolic link to a place outside: refused in one line with
    rc 2, before anything is written (the target and OUT as they were)."""
    if fmt == "diffusers":
        pytest.importorskip("diffusers")
    argv = [str(inputs.ckpt)]  # the trained pixel SiT
    if kind == "dit":  # a latent DiT: DiTPipeline needs a VAE, so a pixel DiT's export is refused anyway
        tiny_checkpoint(tmp_path / "dit.pt", "DiT-T/2", in_channels=4)
        argv = [str(tmp_path / "dit.pt"), "--vae", str(inputs.vae)]
    if kind == "latent":  # a latent SiT with the tiny VAE (16 px images <-> 4 x 8 x 8 latents)
        tiny_checkpoint(tmp_path / "latent.pt", "SiT-T/2", in_channels=4)
        argv = [str(tmp_path / "latent.pt"), "--vae", str(inputs.vae)]
    victim = tmp_path / "elsewhere"
    victim.mkdir()
    (victim / "precious.txt").write_text("precious")
    out = tmp_path / "out"
    if link:
        out.mkdir()
        (out / link).parent.mkdir(parents=True, exist_ok=True)
    (out / link if link else out).symlink_to(victim if folder else victim / "precious.txt")
    before_out = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert main(["export", *argv, "--format", fmt, "--output", str(out)]) == 2
    one_line(capsys, "is a symbolic link", "nothing was written")
    assert snapshot(victim) == {"precious.txt": b"precious"}
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before_out


def test_outputs_named_by_a_file_never_write_through_a_link(tmp_path, inputs, capsys):
    """`sra sample --output F`: a link planted at F's temporary name (F.tmp) is removed, not written through, and a
    link at F is replaced by the grid (atomic rename), its target untouched; the same atomic_write serves plot, eval,
    probe and pca."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / "grid.png.tmp").symlink_to(victim)
    (tmp_path / "grid.png").symlink_to(victim)
    assert main(["sample", str(inputs.ckpt), "--steps", "1", "--num-images", "1", "--output",
                 str(tmp_path / "grid.png")]) == 0
    assert victim.read_text() == "precious" and not (tmp_path / "grid.png").is_symlink()
    assert (tmp_path / "grid.png").read_bytes().startswith(b"\x89PNG") and not (tmp_path / "grid.png.tmp").exists()


@pytest.fixture(scope="module")
def bare_export(tmp_path_factory, trained):
    """A safetensors export whose model.safetensors carries no config metadata, so that config.json is read."""
    from safetensors.torch import load_file, save_file

    out = tmp_path_factory.mktemp("bare") / "export"
    assert main(["export", str(trained), "--output", str(out)]) == 0
    save_file(load_file(out / "model.safetensors"), out / "model.safetensors")
    return out


TAMPERED = [  # (change to config.json's architecture: a key and its value, None to delete; words of the one line)
    ({"color": 3}, "'color' is not an architecture key"),
    ({"num_heads": 0}, "num_heads must be an integer in 1.."),
    ({"num_heads": 3}, "num_heads 3 does not divide hidden_size 128"),
    ({"patch_size": 0}, "patch_size must be an integer in 1.."),
    ({"patch_size": 3}, "patch_size 3 does not divide input_size 8"),
    ({"num_classes": 0}, "num_classes must be an integer in 1.."),
    ({"hidden_size": 10 ** 7}, "billion parameters, over the 20 billion"),
    ({"depth": 10 ** 6}, "billion parameters, over the 20 billion"),
    ({"hidden_size": 10 ** 400}, "hidden_size must be an integer in 1.."),
    ({"depth": 2.0}, "depth must be an integer in 1.."),
    ({"in_channels": "1"}, "in_channels must be an integer in 1.."),
    ({"num_classes": True}, "num_classes must be an integer in 1.."),
    ({"mlp_ratio": float("nan")}, "mlp_ratio must be a finite number"),
    ({"mlp_ratio": 0}, "mlp_ratio 0 at hidden_size 128 gives an MLP width outside"),
    ({"learn_sigma": "no"}, "learn_sigma must be true or false"),
    ({"class_dropout_prob": 1.0}, "class_dropout_prob must be below 1"),
    ({"depth": None}, "depth is missing"),
    ("architecture-missing", "the architecture is missing or not an object"),
    ("architecture-a-list", "the architecture is missing or not an object"),
]


@pytest.mark.parametrize("change, words", TAMPERED, ids=[str(c) for c, _ in TAMPERED])
def test_tampered_export_architecture_is_one_line(tmp_path, bare_export, capsys, change, words):
    """Each malformed, inconsistent or oversized architecture in an export's config.json: one line naming the file
    and the key, before any module is built (sample writes nothing)."""
    import shutil

    folder = tmp_path / "export"
    shutil.copytree(bare_export, folder)
    config = json.loads((folder / "config.json").read_text())
    if change == "architecture-missing":
        del config["architecture"]
    elif change == "architecture-a-list":
        config["architecture"] = [1, 2]
    else:
        for key, value in change.items():
            if value is None:
                del config["architecture"][key]
            else:
                config["architecture"][key] = value
    (folder / "config.json").write_text(json.dumps(config))
    assert main(["sample", str(folder), "--steps", "1", "--num-images", "1", "--output", str(tmp_path / "s.png")]) == 2
    one_line(capsys, str(folder / "config.json"), words)
    assert not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("change, words", [
    ({"num_attention_heads": 0}, "num_attention_heads must be an integer in 1.."),
    ({"num_layers": 10 ** 6}, "billion parameters"),
    ({"attention_head_dim": 10 ** 7}, "billion parameters"),
    ({"patch_size": 3}, "patch_size 3 does not divide input_size 8"),
    ({"num_embeds_ada_norm": 0}, "num_embeds_ada_norm must be an integer in 1.."),
    ({"out_channels": 5}, "out_channels 5 is neither in_channels 1 nor twice it"),
])
def test_tampered_diffusers_dit_config_is_one_line(tmp_path, change, words):
    """load_diffusers_dit checks the transformer's config.json with the same validator before diffusers builds it."""
    pytest.importorskip("diffusers")
    import torch

    from sra.checkpoint import CheckpointError
    from sra.models.export import load_diffusers_dit, to_diffusers

    model = tiny_checkpoint(tmp_path / "dit.pt", "DiT-T/4")
    to_diffusers(model).save_pretrained(tmp_path / "hf")
    assert isinstance(load_diffusers_dit(tmp_path / "hf"), torch.nn.Module)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(CheckpointError) as e:
        load_diffusers_dit(tmp_path / "hf")
    assert str(tmp_path / "hf" / "config.json") in str(e.value) and words in str(e.value)
    assert len(str(e.value).splitlines()) == 1


def test_a_stray_block_key_builds_no_deeper_model(tmp_path, capsys):
    """blocks.1000000.foo beside 6 whole blocks: the depth read off the shapes is 6 (blocks with all their weights),
    and the stray key is one line (an unexpected key), not a million-block model."""
    import torch

    from sra.models import architecture_from_state

    def stray(state):
        state["blocks.1000000.foo"] = torch.zeros(1)

    tiny_checkpoint(tmp_path / "stray.pt", state_edit=stray)
    state = torch.load(tmp_path / "stray.pt")["ema"]
    assert architecture_from_state(state)["depth"] == 6
    assert main(["sample", str(tmp_path / "stray.pt"), "--steps", "1", "--num-images", "1", "--output",
                 str(tmp_path / "s.png")]) == 2
    one_line(capsys, "1 unexpected keys (e.g. blocks.1000000.foo)")


def test_a_run_config_that_disagrees_with_its_weights_is_refused(tmp_path, capsys):
    """config.json says 10 classes, the checkpoint's label table has 1001 rows (1000 classes + the null label)."""
    run = tmp_path / "run"
    tiny_checkpoint(run / "checkpoints" / "0000001.pt", num_classes=1000)
    (run / "config.json").write_text(json.dumps({"model": "SiT-T/4", "input_size": 8, "in_channels": 1,
                                                 "num_classes": 10}))
    assert main(["sample", str(run), "--steps", "1", "--num-images", "1", "--output", str(tmp_path / "s.png")]) == 2
    one_line(capsys, f"{run / 'config.json'} says num_classes 10", "holds a model with 1000")


@pytest.mark.parametrize("bad", ["nan", "inf", "int64"])
def test_non_finite_or_integer_weights_are_refused_for_sampling(tmp_path, capsys, bad):
    """One line naming the file and the first bad tensor; load_model(..., allow_nonfinite=True) takes NaN and inf."""
    import torch

    from sra.models import load_model

    key = "blocks.2.attn.qkv.weight"

    def spoil(state):
        if bad == "int64":
            state[key] = state[key].to(torch.int64)
        else:
            state[key][0, 0] = float(bad)

    tiny_checkpoint(tmp_path / "w.pt", state_edit=spoil)
    assert main(["sample", str(tmp_path / "w.pt"), "--steps", "1", "--num-images", "1", "--output",
                 str(tmp_path / "s.png")]) == 2
    one_line(capsys, str(tmp_path / "w.pt"), key, "torch.int64, not floating point" if bad == "int64" else
             "NaN or infinite")
    if bad != "int64":
        assert not torch.isfinite(load_model(tmp_path / "w.pt", allow_nonfinite=True).model.state_dict()[key]).all()
