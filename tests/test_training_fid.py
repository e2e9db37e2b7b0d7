"""FID during training (--eval-every N --eval-ref REF) equals `sra generate` + `sra eval` on the same samples, with an
image reference or saved statistics, in one process or split over two (torchrun)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from sra.cli import main
from sra.evaluation import InceptionV3Features

N = 12  # samples: 10 parts for the Inception Score, two of them with 2 images (one image per part scores 1)
# lr 0.01 without warm-up: after 2 steps the (adaLN-Zero) model already depends on its labels, so samples drawn with
# the wrong labels would change the FID; at the tiny preset's warm-up lr (1e-5 at step 2) it would still be at init.
TRAIN = ["train", "--model", "SiT-T/2", "--data-dir", "digits", "--batch-size", "8", "--max-train-steps", "2",
         "--lr", "0.01", "--lr-warmup-steps", "0", "--log-every", "2", "--sample-every", "100", "--sample-steps", "2",
         "--no-progress", "--eval-every", "2", "--eval-num", str(N), "--report-to", "none"]


@pytest.fixture(scope="module")
def fid_files(tmp_path_factory):
    """Random Inception weights (standing in for pytorch-fid's file: no download), a reference batch of 10 real 8x8
    digits in ADM's arr_0 format, and its statistics saved by `sra eval --save-stats`.

    PyTorch's default initialisation shrinks activations about 3x per layer: its pool features come out ~1e-8 and
    every FID ~1e-14, which any tolerance passes. He-normal convolutions keep features O(0.1-1) and samples
    distinguishable (FIDs about 10 here), and a wider fc makes p(y|x) differ between images, so equal scores mean
    equal features."""
    from sklearn.datasets import load_digits

    d = tmp_path_factory.mktemp("fid")
    torch.manual_seed(0)
    net = InceptionV3Features(pretrained=False)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    torch.nn.init.normal_(net.fc.weight, std=0.5)
    weights = d / "inception.pth"
    torch.save({k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}, weights)
    digits = load_digits().images[:10]
    ref = d / "ref.npz"
    np.savez(ref, arr_0=np.repeat((digits / 16 * 255).round().astype(np.uint8)[..., None], 3, axis=-1))
    stats = d / "ref_stats.npz"
    assert main(["eval", str(ref), "--save-stats", str(stats), "--inception-weights", str(weights),
                 "--output", str(d / "stats.json"), "--no-progress"]) == 0
    return weights, ref, stats


def last_row(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-1]


def test_training_fid_matches_sra_eval_on_the_same_samples(fid_files, tmp_path):
    weights, ref, stats = fid_files
    run = tmp_path / "r"
    assert main([*TRAIN, "--output-dir", str(tmp_path), "--exp-name", "r", "--eval-ref", str(ref),
                 "--eval-inception", str(weights)]) == 0
    row = last_row(run)
    assert row["step"] == 2 and row["fid"] > 0.01 and row["inception_score"] > 1.0001  # informative, not ~0 / 1

    # The same samples through the standalone tools: EMA, ODE with the grid's 2 steps, no guidance, seed 0. The
    # training run scored against the images (arr_0), `sra eval` against their saved statistics: equal FIDs show both
    # that the in-training samples are `sra generate`'s and that saved statistics stand in for their images.
    gen = tmp_path / "gen"
    assert main(["generate", str(run), "--output-dir", str(gen), "--num-images", str(N), "--mode", "ode",
                 "--steps", "2", "--cfg-scale", "1", "--seed", "0", "--batch-size", "8", "--no-progress"]) == 0
    assert main(["eval", str(gen / "samples.npz"), str(stats), "--inception-weights", str(weights),
                 "--output", str(tmp_path / "eval.json"), "--no-progress"]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["num_samples"] == N and result["reference_source"].startswith("stored statistics")
    assert row["fid"] == pytest.approx(result["fid"], rel=1e-6)
    assert row["inception_score"] == pytest.approx(result["inception_score"], rel=1e-6)


def test_training_fid_under_torchrun_equals_one_process(fid_files, tmp_path):
    """Two ranks sample the even and the odd images (per-image seeds) and rank 0 scores the gathered features: the
    logged FID must be the one a single process computes for the same EMA, so curves do not depend on the GPU count."""
    from sra.evaluation.training_fid import TrainingFID
    from sra.models import load_model
    from sra.generate import process_of

    weights, _, stats = fid_files
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "sra", *TRAIN,
           "--output-dir", str(tmp_path), "--exp-name", "two", "--eval-ref", str(stats), "--eval-inception",
           str(weights)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = last_row(tmp_path / "two")
    assert row["step"] == 2 and row["fid"] > 0.01 and row["inception_score"] > 1.0001

    # The step-2 checkpoint holds the EMA that was evaluated (the eval row is written after the step's checkpoint).
    loaded = load_model(tmp_path / "two")
    one = TrainingFID(loaded.model, process=process_of(loaded), run_config=loaded.config, reference=str(stats),
                      num_samples=N, num_steps=2, seed=0, batch_size=N, inception_weights=str(weights))()
    assert row["fid"] == pytest.approx(one["fid"], rel=1e-5)
    assert row["inception_score"] == pytest.approx(one["inception_score"], rel=1e-5)


def test_a_rank_that_fails_its_share_does_not_hang_the_others(fid_files, tmp_path):
    """Rank 1's sampling fails at the first evaluation (step 2) only: every rank gives that evaluation up instead of
    rank 0 waiting in the gather until the process group's timeout, and the evaluation of step 4 is scored normally,
    so the ranks stayed in step."""
    weights, _, stats = fid_files
    script = tmp_path / "failing_rank.py"
    script.write_text(
        "import os, sys\n"
        "import sra.evaluation.training_fid as tf\n"
        "real, calls = tf.sample_images, []\n"
        "def flaky(*a, **k):\n"
        "    calls.append(1)\n"
        "    if os.environ['RANK'] == '1' and len(calls) == 1:\n"
        "        raise RuntimeError('injected sampling failure')\n"
        "    return real(*a, **k)\n"
        "tf.sample_images = flaky\n"
        "from sra.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    args = list(TRAIN)
    args[args.index("--max-train-steps") + 1] = "4"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), *args,
           "--output-dir", str(tmp_path), "--exp-name", "flaky", "--eval-ref", str(stats), "--eval-inception",
           str(weights)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = proc.stderr.split("warning: the evaluation of step 2 failed")[1:]
    assert len(warnings) == 2, proc.stderr[-3000:]  # the failed rank's own reason and rank 0's
    assert any("injected sampling failure" in w for w in warnings)
    assert any("another rank could not" in w for w in warnings)
    rows = [json.loads(x) for x in (tmp_path / "flaky" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "fid" in r] == [4] and rows[-1]["fid"] > 0.01
    assert [r["step"] for r in rows if "loss" in r] == [2, 4]
