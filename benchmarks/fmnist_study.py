"""Does SRA help? A small controlled study on Fashion-MNIST that reruns on a CPU (issue 9).

Trains the default tiny SiT (`sra train` with no flags: SiT-T/4, 32x32x1 Fashion-MNIST, batch 64, AdamW lr 1e-3 with a
200-step warm-up, EMA decay min(0.999, (1+n)/(10+n))) with and without SRA at the same steps, batch and seeds, plus
one-seed ablation rows, and scores each checkpoint's EMA with FD-FMNIST and the classifier's accuracy on 1000
class-balanced samples (Euler ODE, 30 steps, fixed sampling seed).

Resumable: every run has its own folder RUNS_DIR/<name> (training resumes by re-running it), every evaluation is one
line appended to RESULTS, and (run, step) pairs already in RESULTS are not evaluated again. Runs go to subprocesses,
--jobs at a time, each with --threads torch threads.

    python benchmarks/fmnist_study.py                      # main comparison + ablations, then the report
    python benchmarks/fmnist_study.py --only main --jobs 2 # just the plain/SRA seeds
    python benchmarks/fmnist_study.py --report             # rewrite docs/RESULTS.md from the results file
    python benchmarks/fmnist_study.py --quick --runs-dir /tmp/q/runs --results /tmp/q/r.jsonl --docs-dir /tmp/q/docs
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLING_SEED = 1234  # the same noise and labels for every evaluation


@dataclass
class Run:
    name: str                              # run folder name under RUNS_DIR
    group: str                             # "main" or "ablation"
    label: str                             # what this row changes, in words
    seed: int                              # training seed (data order, noise, init)
    steps: int                             # optimizer steps
    eval_steps: list[int]                  # checkpoints whose EMA is evaluated
    align: dict = field(default_factory=dict)  # AlignConfig overrides on top of SRA_MAIN


# SRA as the default `sra train` runs it on the tiny preset: blocks 2 -> 4, cosine, lambda 0.5, k ~ U(0, 0.2), head,
# EMA teacher in fp32. lambda = 0 is plain training (no teacher forward; the RNG streams stay identical).
SRA_MAIN = dict(weight=0.5, distance="cos", block_out_s=2, block_out_t=4, t_max=0.2, interval="uniform",
                use_head=True, teacher="ema")

# Ablations in priority order (the list is cut from the end when the budget is short). Each changes one thing.
ABLATIONS = [
    ("sra-interval-none", "time interval: none (k = 0, teacher sees the same t)", dict(interval="none")),
    ("sra-interval-fixed", "time interval: fixed k = 0.2", dict(interval="fixed")),
    ("sra-teacher-online", "teacher = online model (no EMA)", dict(teacher="online")),
    ("sra-lambda-1.0", "lambda = 1.0", dict(weight=1.0)),
    ("sra-lambda-0.2", "lambda = 0.2", dict(weight=0.2)),
    ("sra-layers-1-4", "layers 1 -> 4", dict(block_out_s=1, block_out_t=4)),
    ("sra-layers-3-5", "layers 3 -> 5", dict(block_out_s=3, block_out_t=5)),
    ("sra-layers-2-6", "layers 2 -> 6", dict(block_out_s=2, block_out_t=6)),
    ("sra-no-head", "no projection head", dict(use_head=False)),
    ("sra-sml1-0.2", "distance smooth-L1 (beta 0.05), lambda 0.2", dict(distance="sml1", weight=0.2)),
]


def study_runs(opts) -> list[Run]:
    """The main comparison (plain and SRA per seed, interleaved so each seed finishes as a pair), then ablations."""
    every = opts.eval_every
    main_evals = list(range(every, opts.steps + 1, every))
    if not main_evals or main_evals[-1] != opts.steps:
        main_evals.append(opts.steps)
    runs = []
    if opts.only in ("all", "main"):
        for seed in opts.seeds:
            runs.append(Run(f"plain-s{seed}", "main", "plain (lambda = 0)", seed, opts.steps, main_evals,
                            dict(weight=0.0)))
            runs.append(Run(f"sra-s{seed}", "main", "SRA (2 -> 4, cos, lambda 0.5, U(0, 0.2))", seed, opts.steps,
                            main_evals))
    if opts.only in ("all", "ablations") and not opts.quick:
        for name, label, align in ABLATIONS[:opts.max_ablations]:
            runs.append(Run(f"{name}-s0", "ablation", label, 0, opts.ablation_steps, [opts.ablation_steps], align))
    if opts.runs:
        keep = set(opts.runs.split(","))
        runs = [r for r in runs if r.name in keep]
    return runs


# ----------------------------------------------------------------------------------------------------------------
# One run: train (resuming), then evaluate the checkpoints not yet in the results file
# ----------------------------------------------------------------------------------------------------------------

def train_config(run: Run, opts):
    from sra.objectives import AlignConfig
    from sra.train import TrainConfig

    align = AlignConfig(**{**SRA_MAIN, **run.align}, teacher_bf16=None)
    return TrainConfig(model=opts.model, data_dir=opts.data_dir, output_dir=str(opts.runs_dir), exp_name=run.name,
                       max_train_steps=run.steps, seed=run.seed, align=align, checkpoint_every=opts.checkpoint_every,
                       sample_every=run.steps, log_every=opts.log_every, progress=False)


def read_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line cut by a kill: ignored, its evaluation is redone
    return rows


def done_pairs(path: Path) -> set[tuple[str, int]]:
    return {(r["run"], int(r["step"])) for r in read_results(path)}


def train_seconds(run_dir: Path, step: int, log_every: int, batch: int) -> float | None:
    """Training time to `step`: the logged intervals (images / images_per_s), deduplicated by step across resumes."""
    f = run_dir / "metrics.jsonl"
    if not f.exists():
        return None
    per_step = {}
    for line in f.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "images_per_s" in r and r["step"] <= step:
            span = r["step"] - (r["step"] - 1) // log_every * log_every  # steps in this logging interval
            per_step[r["step"]] = span * batch / r["images_per_s"]
    return sum(per_step.values()) if per_step else None


def run_one(run: Run, opts) -> None:
    """Worker body (a subprocess): train to run.steps, then evaluate each wanted checkpoint once."""
    import torch

    torch.set_num_threads(opts.threads)
    from sra.evaluation.fmnist import evaluate_fmnist_for_training
    from sra.models.loading import load_model
    from sra.train import train
    from sra.train.checkpoint import checkpoint_path, latest_checkpoint

    run_dir = Path(opts.runs_dir) / run.name
    last = latest_checkpoint(run_dir)
    t0 = time.perf_counter()
    if last is None or int(last.stem) < run.steps:
        train(train_config(run, opts))
    print(f"{run.name}: trained ({time.perf_counter() - t0:.0f} s this call)", flush=True)
    results = Path(opts.results)
    for step in run.eval_steps:
        if (run.name, step) in done_pairs(results):
            continue
        ckpt = checkpoint_path(run_dir, step)
        t1 = time.perf_counter()
        loaded = load_model(ckpt)  # EMA weights
        scores = evaluate_fmnist_for_training(loaded.model, opts.eval_samples, "cpu", seed=SAMPLING_SEED,
                                              num_steps=opts.sample_steps)
        row = {"run": run.name, "step": step, "group": run.group, "label": run.label, "seed": run.seed,
               "fd_fmnist": scores["fd_fmnist"], "class_acc": scores["class_acc"],
               "num_samples": scores["num_samples"], "sample_steps": opts.sample_steps, "sampling_seed": SAMPLING_SEED,
               "train_seconds": train_seconds(run_dir, step, opts.log_every, 64),
               "eval_seconds": time.perf_counter() - t1, "threads": opts.threads, "model": opts.model,
               "align": {**SRA_MAIN, **run.align}, "time": time.strftime("%Y-%m-%d %H:%M:%S")}
        results.parent.mkdir(parents=True, exist_ok=True)
        with open(results, "a") as f:  # one short line per write: concurrent workers do not interleave
            f.write(json.dumps(row) + "\n")
        print(f"{run.name} @ {step}: FD {row['fd_fmnist']:.2f}, acc {row['class_acc']:.3f} "
              f"({row['eval_seconds']:.0f} s)", flush=True)


# ----------------------------------------------------------------------------------------------------------------
# The scheduler: pending runs to --jobs subprocesses
# ----------------------------------------------------------------------------------------------------------------

def pending(runs: list[Run], opts) -> list[Run]:
    done = done_pairs(Path(opts.results))
    return [r for r in runs if any((r.name, s) not in done for s in r.eval_steps)]


def schedule(runs: list[Run], opts, argv: list[str]) -> None:
    todo = pending(runs, opts)
    print(f"{len(runs)} runs, {len(todo)} with evaluations pending: {', '.join(r.name for r in todo)}", flush=True)
    logs = Path(opts.runs_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(opts.threads), MKL_NUM_THREADS=str(opts.threads))
    active: list[tuple[Run, subprocess.Popen, float]] = []
    while todo or active:
        while todo and len(active) < opts.jobs:
            run = todo.pop(0)
            log = open(logs / f"{run.name}.log", "a")
            cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", run.name]
            active.append((run, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), time.time()))
            print(f"started {run.name} (log {logs / run.name}.log)", flush=True)
        time.sleep(opts.poll)
        for item in list(active):
            run, proc, t0 = item
            if proc.poll() is not None:
                active.remove(item)
                state = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
                print(f"{run.name}: {state} after {time.time() - t0:.0f} s", flush=True)
                if not opts.no_report:
                    report(opts)


# ----------------------------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------------------------

def report(opts) -> None:
    pass


def parse(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--only", default="all", choices=["all", "main", "ablations"], help="which runs")
    ap.add_argument("--runs", default=None, help="comma-separated run names to restrict to (e.g. plain-s0,sra-s0)")
    ap.add_argument("--steps", type=int, default=1200, help="optimizer steps of the main runs")
    ap.add_argument("--ablation-steps", type=int, default=600, help="optimizer steps of the ablation runs")
    ap.add_argument("--max-ablations", type=int, default=len(ABLATIONS), help="keep the first N ablations (priority order)")
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1],
                    help="training seeds of the main comparison, comma-separated")
    ap.add_argument("--eval-every", type=int, default=300, help="steps between evaluated checkpoints (main runs)")
    ap.add_argument("--checkpoint-every", type=int, default=300, help="steps between checkpoints")
    ap.add_argument("--log-every", type=int, default=50, help="steps between metrics lines")
    ap.add_argument("--eval-samples", type=int, default=1000, help="generated samples per evaluation (balanced classes)")
    ap.add_argument("--sample-steps", type=int, default=30, help="Euler ODE steps per sample")
    ap.add_argument("--model", default="SiT-T/4", help="preset")
    ap.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX folder (default: the system's)")
    ap.add_argument("--jobs", type=int, default=2, help="training subprocesses at a time")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per subprocess")
    ap.add_argument("--runs-dir", default=None, help="parent of the run folders (default runs/study)")
    ap.add_argument("--results", default=None, help="JSONL results file (default benchmarks/results/fmnist_study.jsonl)")
    ap.add_argument("--docs-dir", default=None, help="where RESULTS.md and the PNGs go (default docs)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 2 runs (plain, SRA) x 30 steps, 100 samples x 10 Euler steps, outputs under "
                         "runs/study-quick unless the paths are given")
    ap.add_argument("--report", action="store_true", help="only rewrite the report from the results file")
    ap.add_argument("--no-report", action="store_true", help="do not write the report")
    ap.add_argument("--poll", type=float, default=5.0, help="seconds between checks on the subprocesses")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    if opts.quick:
        opts.steps, opts.eval_every, opts.checkpoint_every, opts.log_every = 30, 15, 15, 5
        opts.eval_samples, opts.sample_steps, opts.seeds = 100, 10, [0]
    base = ROOT / "runs" / ("study-quick" if opts.quick else "study")
    opts.runs_dir = Path(opts.runs_dir or base)
    opts.results = Path(opts.results or (base / "results.jsonl" if opts.quick
                                         else ROOT / "benchmarks" / "results" / "fmnist_study.jsonl"))
    opts.docs_dir = Path(opts.docs_dir or (base / "docs" if opts.quick else ROOT / "docs"))
    return opts


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    opts = parse(argv)
    if opts.worker:
        run = next(r for r in study_runs(opts) if r.name == opts.worker)
        run_one(run, opts)
        return 0
    if not opts.report:
        schedule(study_runs(opts), opts, argv)
    if not opts.no_report:
        report(opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
