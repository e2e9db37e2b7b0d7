"""FID during training (--eval-every N --eval-ref REF) equals `sra generate` + `sra eval` on the same samples."""
import json

import numpy as np
import torch

from sra.cli import main
from sra.evaluation import InceptionV3Features


def test_training_fid_matches_sra_eval_on_the_same_samples(tmp_path, capsys):
    torch.manual_seed(0)
    net = InceptionV3Features(pretrained=False)  # random weights stand in for pytorch-fid's file (no download)
    weights = tmp_path / "inception.pth"
    torch.save({k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}, weights)
    from sklearn.datasets import load_digits

    digits = load_digits().images[:10]  # the reference: real 8x8 digits as an ADM-style arr_0 batch
    ref = tmp_path / "ref.npz"
    np.savez(ref, arr_0=np.repeat((digits / 16 * 255).round().astype(np.uint8)[..., None], 3, axis=-1))

    run = tmp_path / "r"
    n = 10
    assert main(["train", "--model", "SiT-T/2", "--data-dir", "digits", "--batch-size", "8", "--max-train-steps", "2",
                 "--log-every", "2", "--sample-every", "100", "--sample-steps", "2", "--no-progress",
                 "--output-dir", str(tmp_path), "--exp-name", "r", "--eval-every", "2", "--eval-ref", str(ref),
                 "--eval-inception", str(weights), "--eval-num", str(n), "--report-to", "none"]) == 0
    row = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert row["step"] == 2 and np.isfinite(row["fid"]) and row["inception_score"] >= 1.0

    # The same samples through the standalone tools: EMA, ODE with the grid's 2 steps, no guidance, seed 0.
    gen = tmp_path / "gen"
    assert main(["generate", str(run), "--output-dir", str(gen), "--num-images", str(n), "--mode", "ode",
                 "--steps", "2", "--cfg-scale", "1", "--seed", "0", "--batch-size", "8", "--no-progress"]) == 0
    assert main(["eval", str(gen / "samples.npz"), str(ref), "--inception-weights", str(weights),
                 "--output", str(tmp_path / "eval.json"), "--no-progress"]) == 0
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["num_samples"] == n
    assert abs(row["fid"] - result["fid"]) <= 1e-6 * max(1.0, result["fid"])
    assert abs(row["inception_score"] - result["inception_score"]) <= 1e-6 * result["inception_score"]

    # Saved statistics (`sra eval --save-stats`) as the reference give the same FID as the batch they came from.
    from sra.evaluation.training_fid import TrainingFID
    from sra.models import load_model

    stats = tmp_path / "ref_stats.npz"
    assert main(["eval", str(ref), "--save-stats", str(stats), "--inception-weights", str(weights),
                 "--output", str(tmp_path / "stats.json"), "--no-progress"]) == 0
    loaded = load_model(run)
    fid = TrainingFID(loaded.model, family="SiT", run_config=loaded.config, reference=str(stats), num_samples=n,
                      num_steps=2, seed=0, batch_size=8, inception_weights=str(weights))()
    assert abs(fid["fid"] - result["fid"]) <= 1e-6 * max(1.0, result["fid"])
