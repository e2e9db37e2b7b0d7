"""How `sra train` (and so `make demo`) ends: the run folder, the last grid, the final loss and, with a cached FD-FMNIST
classifier, FD-FMNIST and class accuracy equal to what `sra eval --metric fmnist RUN` reports."""
import json
import re

import numpy as np
import pytest
import torch

from sra.cli import main
from sra.data.pixels import load_fashion_mnist
from sra.evaluation import fmnist
from sra.train import summary


def write_idx(path, array: np.ndarray) -> None:
    """An unsigned-byte IDX file (the MNIST format): magic 0x00000803 / 0x00000801, big-endian dims, the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def tiny_fashion_mnist(root, n=120):
    """A Fashion-MNIST-format folder (IDX train and t10k splits): class c is a bright square at a class-dependent
    place, so that a classifier learns something in one epoch."""
    rng = np.random.default_rng(0)
    root.mkdir()
    for prefix in ("train", "t10k"):
        y = np.arange(n) % 10
        x = rng.integers(0, 40, (n, 28, 28))
        for i, c in enumerate(y):
            x[i, 2 * c: 2 * c + 8, 2 * c: 2 * c + 8] = 255
        write_idx(root / f"{prefix}-images-idx3-ubyte", x)
        write_idx(root / f"{prefix}-labels-idx1-ubyte", y)
    return root


@pytest.mark.filterwarnings("ignore:only .* samples for 128-dimensional features")
def test_train_ends_with_grid_loss_and_fmnist_scores_equal_to_sra_eval(tmp_path, monkeypatch, capsys):
    data = tiny_fashion_mnist(tmp_path / "fmnist")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(fmnist, "_LOADED", {})
    monkeypatch.setattr(summary, "EVAL_SAMPLES", 40)  # the summary's 1000 samples take a minute; sra eval gets 40 too
    args = ["train", "--model", "SiT-T/4", "--depth", "2", "--sra-weight", "0", "--data-dir", str(data), "--batch-size", "8",
            "--max-train-steps", "3", "--log-every", "2", "--sample-every", "1000", "--sample-steps", "2",
            "--no-progress", "--output-dir", str(tmp_path / "runs"), "--exp-name", "demo"]
    run = tmp_path / "runs" / "demo"

    # 1. No cached classifier: the summary names grid and loss, and says how to get the scores (it trains nothing).
    assert main(args) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "loss" in r][-1]
    assert last["step"] == 3
    assert f"sample grid:  {run / 'samples' / '0000003.png'}" in out and (run / "samples" / "0000003.png").is_file()
    assert f"final loss:   {last['loss']:.4f} at step 3" in out
    assert "the FD-FMNIST classifier is not cached" in out and f"sra eval --metric fmnist {run}" in out
    assert not list((tmp_path / "cache").glob("sra/*.pt"))

    # 2. A cached classifier (trained on the tiny split, stored under the default recipe's key): a rerun of the finished
    #    run prints FD-FMNIST and class accuracy, the same numbers as `sra eval --metric fmnist RUN`.
    tx, ty = load_fashion_mnist(data, "train")
    vx, vy = load_fashion_mnist(data, "test")
    blob = fmnist.classifier_blob(tx, ty, vx, vy, fmnist.ClassifierRecipe(epochs=1, batch_size=32), progress=False)
    (tmp_path / "cache" / "sra").mkdir(parents=True)
    torch.save(blob, tmp_path / "cache" / "sra" / f"fmnist-classifier-{fmnist.recipe_key(fmnist.ClassifierRecipe())}.pt")
    assert main(args) == 0
    out = capsys.readouterr().out
    match = re.search(r"FD-FMNIST:    ([\d.]+), class accuracy ([\d.]+) %", out)
    assert match, out
    assert main(["eval", "--metric", "fmnist", str(run), "--num-samples", "40", "--no-progress",
                 "--output", str(tmp_path / "eval.json")]) == 0
    ref = json.loads((tmp_path / "eval.json").read_text())
    assert ref["step"] == 3 and ref["num_samples"] == 40
    assert match.group(1) == f"{ref['fd_fmnist']:.1f}" and match.group(2) == f"{100 * ref['class_acc']:.1f}"


def test_summary_of_a_digits_run_has_no_fmnist_line(tmp_path):
    assert main(["train", "--model", "SiT-T/2", "--depth", "1", "--sra-weight", "0", "--data-dir", "digits", "--batch-size", "8",
                 "--max-train-steps", "1", "--sample-steps", "1", "--no-progress", "--output-dir", str(tmp_path),
                 "--exp-name", "d"]) == 0
    lines = summary.run_summary(tmp_path / "d", "digits")
    assert lines[0] == f"run folder:   {tmp_path / 'd'}" and lines[1].startswith("sample grid:")
    assert lines[2].startswith("final loss:") and not any("FD-FMNIST" in line for line in lines)
