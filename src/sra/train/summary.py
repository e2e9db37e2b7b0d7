"""What a finished `sra train` tells its user: the run folder, the last sample grid, the final logged loss and, for a
Fashion-MNIST pixel model, FD-FMNIST and class accuracy.

The scores come from metrics.jsonl when the run logged them at its last step (`--eval-every`); otherwise they are
measured once here, only when the FD-FMNIST classifier is already cached (training it takes minutes, so a summary never
does): 1000 EMA samples, balanced classes, seed 0, Euler ODE 30 steps (DDIM for DiT), no guidance, which is exactly
what `sra eval --metric fmnist RUN` prints."""
from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import CheckpointError
from ..data import DataError, load_dataset
from ..evaluation.fmnist import cached_fmnist_scorer, fmnist_scores, generate_samples
from ..generate import process_of
from ..models import load_model
from ..runfolder import read_jsonl
from ..objectives import TERMS
from ..process import PROCESSES

EVAL_SAMPLES, EVAL_SEED, EVAL_STEPS = 1000, 0, 30  # = `sra eval --metric fmnist` defaults


def fmnist_evaluation(run: Path, data_dir: str | None, device) -> tuple[dict | None, str]:
    """(scores, how they were obtained) of the run's latest EMA, or (None, why not)."""
    if getattr(load_dataset(data_dir, split="test"), "name", "") != "fashion-mnist":
        return None, ""
    scorer = cached_fmnist_scorer(device)
    if scorer is None:
        return None, (f"not measured: the FD-FMNIST classifier is not cached yet; `sra eval --metric fmnist {run}` "
                      "trains it once (a few minutes on a CPU) and scores the run")
    print(f"measuring FD-FMNIST on {EVAL_SAMPLES} EMA samples (about a minute on a CPU) ...", flush=True)
    loaded = load_model(run, device=device)
    process = process_of(loaded)
    images, labels = generate_samples(loaded.model, process, EVAL_SAMPLES, device, EVAL_SEED, EVAL_STEPS)
    scores = fmnist_scores(images, labels, scorer=scorer)
    sampler = process.grid_name
    return scores, (f"{EVAL_SAMPLES} EMA samples at step {loaded.step}, {sampler} {EVAL_STEPS} steps, no guidance, "
                    f"as `sra eval --metric fmnist {run}`; classifier test accuracy {100 * scorer.test_accuracy:.1f} %")


def run_summary(run: str | Path, data_dir: str | None = None, device=None) -> list[str]:
    """The closing lines of `sra train` (see the module docstring)."""
    run = Path(run)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    lines = [f"run folder:   {run}"]
    grids = sorted((run / "samples").glob("*.png"))
    if grids:
        lines.append(f"sample grid:  {grids[-1]} (EMA, fixed noise, one row per class)")
    rows = read_jsonl(run / "metrics.jsonl")  # a torn last line of a killed run is dropped
    losses = [r for r in rows if "loss" in r]
    if losses:
        r = losses[-1]
        names = [*dict.fromkeys(n for p in PROCESSES.values() for n in p.losses), *TERMS]  # every loss a row can hold
        terms = ", ".join(f"{k} {r[k]:.4f}" for k in names if k in r)
        lines.append(f"final loss:   {r['loss']:.4f} at step {r['step']} ({terms}; mean of the last logging interval)")
    evals = [r for r in rows if "fd_fmnist" in r]
    last_step = losses[-1]["step"] if losses else None
    if evals and evals[-1]["step"] == last_step:
        r = evals[-1]
        scores, how = r, f"logged at step {r['step']} (--eval-every)"
    else:
        try:
            scores, how = fmnist_evaluation(run, data_dir, device)
        except (DataError, CheckpointError, OSError, ValueError, RuntimeError) as e:  # the run itself is done
            scores, how = None, f"not measured ({type(e).__name__}: {(str(e).strip().splitlines() or [''])[0]})"
    if scores is not None:
        lines.append(f"FD-FMNIST:    {scores['fd_fmnist']:.1f}, class accuracy {100 * scores['class_acc']:.1f} % "
                     f"({how})")
    elif how:
        lines.append(f"FD-FMNIST:    {how}")
    fids = [r for r in rows if "fid" in r]
    if fids and fids[-1]["step"] == last_step:  # --eval-every with --eval-ref
        r = fids[-1]
        extra = f", Inception Score {r['inception_score']:.2f}" if "inception_score" in r else ""
        lines.append(f"FID:          {r['fid']:.2f}{extra} (logged at step {r['step']})")
    return lines
