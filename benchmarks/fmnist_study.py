"""Does SRA help? A small controlled study on Fashion-MNIST that reruns on a CPU (issue 9).

Trains the default tiny SiT (`sra train` with no flags: SiT-T/4, 32x32x1 Fashion-MNIST, batch 64, AdamW lr 1e-3 with a
200-step warm-up), with the EMA (sampling model and SRA teacher) set by a constant half-life (3.2 kimg = 50 steps, no
warm-up), with and without SRA at the same steps, batch and seeds, plus one-seed ablation rows, and scores each
checkpoint's EMA with FD-FMNIST and the classifier's accuracy on 1000 class-balanced samples (Euler ODE, 30 steps,
fixed sampling seed).

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
import dataclasses
import json
import os
import re
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
    mix: dict = field(default_factory=dict)    # MixConfig fields (token groups); empty: one group
    repa: dict = field(default_factory=dict)   # RepaConfig fields; empty: no REPA
    probe: bool = False                        # linear-probe the final EMA's block tokens (the family section)
    depth: int | None = None                   # blocks, when not the preset's (the deep section)
    probe_block: int = 2                       # the probed block: the student block of the run's SRA setting


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


# The self-alignment family (issue 16), each on top of SRA_MAIN's settings. DTS_AS is the authors' SiT-SRA_DTS_AS recipe
# (scripts/train.sh): mask ratio 0.25 (16 of the 64 tokens in group 0), dual-time scheduling, attention separation,
# teacher mask, teacher time sra. The Self-Flow row keeps DTS+AS but gives the teacher Self-Flow's view: the whole
# image at the lower of the two times, no groups. REPA aligns block 2, through a 256-wide projector (REPA's 2048 is
# ~16x SiT-T's width; 256 keeps its 2x-width ratio to SiT-B/XL), to the FD-FMNIST classifier's 8x8x64 conv features.
DTS_AS = dict(mask_ratio=(0.25,), dual_time_scheduling=True, attention_separation=True, teacher_t="sra",
              teacher_mask=True)
FAMILY = [
    ("sra-dts-as", "SRA + DTS + AS (authors' recipe: mask 0.25, teacher time sra, teacher mask)", {}, DTS_AS, {}),
    ("repa-fmnist", "REPA, classifier features (block 2, λ 0.5, projector 256), no SRA", dict(weight=0.0), {},
     dict(weight=0.5, encoder="fmnist", block=2, projector_dim=256)),
    ("dts-as", "DTS + AS without alignment (λ = 0)", dict(weight=0.0), DTS_AS, {}),
    ("selfflow-teacher", "SRA + DTS + AS, Self-Flow teacher (whole image at the lower time, no mask)", {},
     dict(DTS_AS, teacher_t="self_flow", teacher_mask=False), {}),
]
PROBE_TIMES = (0.5, 0.7, 0.9)  # the student block's tokens, at middle to high noise

# Deeper (issue 16, point 4): the same width, data and steps with 12 blocks instead of 6, SRA from block 3 to block 8
# (the paper's layers for the 12-block SiT-S/B), so the teacher's block is five blocks above the student's instead of
# two. One seed. The question first: does the 6-block model's limit hold here (block-2 tokens a near-linear map of
# block-4 tokens, R^2 0.94-0.97)? The deep runs measure it for their own blocks (`similarity_rows`).
DEEP_DEPTH, DEEP_BLOCKS = 12, (3, 8)
DEEP_ALIGN = dict(block_out_s=DEEP_BLOCKS[0], block_out_t=DEEP_BLOCKS[1])
DEEP = [
    ("plain-d12", "plain (λ = 0), 12 blocks", dict(DEEP_ALIGN, weight=0.0), {}),
    ("sra-d12", "SRA 3 → 8, 12 blocks", DEEP_ALIGN, {}),
    ("sra-dts-as-d12", "SRA + DTS + AS 3 → 8, 12 blocks (authors' recipe)", DEEP_ALIGN, DTS_AS),
]
SIMILARITY_TIMES = (0.5, 0.9)


def deep_runs(opts) -> list[Run]:
    """Seed 0 of each deep method, evaluated and probed (student block 3) at the midpoint and the end."""
    evals, seed = sorted({opts.steps // 2, opts.steps}), opts.seeds[0]
    return [Run(f"{name}-s{seed}", "deep", label, seed, opts.steps, evals, align, mix, probe=True, depth=DEEP_DEPTH,
                probe_block=DEEP_BLOCKS[0]) for name, label, align, mix in DEEP]


def family_runs(opts) -> list[Run]:
    """Seed by seed (all methods of seed 0 first, with plain and SRA retrained for the probe), final checkpoints and
    the midpoint evaluated."""
    evals = sorted({opts.steps // 2, opts.steps})
    runs = []
    for seed in opts.seeds:
        for name, label, align, mix, repa in FAMILY:
            runs.append(Run(f"{name}-s{seed}", "family", label, seed, opts.steps, evals, align, mix, repa,
                            probe=seed == opts.seeds[0]))
        if seed == opts.seeds[0]:  # probe references: the main runs' folders are not kept in the repository
            runs.insert(2, Run(f"plain-s{seed}", "main", "plain (lambda = 0)", seed, opts.steps, [], dict(weight=0.0),
                               probe=True))
            runs.append(Run(f"sra-s{seed}", "main", "SRA (2 -> 4, cos, lambda 0.5, U(0, 0.2))", seed, opts.steps, [],
                            probe=True))
    return runs


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
    if opts.only == "deep" or (opts.only == "all" and not opts.quick):
        runs += deep_runs(opts)
    if opts.only == "family" or (opts.only == "all" and not opts.quick):
        have = {q.name: q for q in runs}
        for r in family_runs(opts):
            if r.name in have:
                have[r.name].probe |= r.probe  # a main run that is also a probe reference
            else:
                runs.append(r)
    if opts.runs:
        keep = set(opts.runs.split(","))
        runs = [r for r in runs if r.name in keep]
    return runs


# ----------------------------------------------------------------------------------------------------------------
# One run: train (resuming), then evaluate the checkpoints not yet in the results file
# ----------------------------------------------------------------------------------------------------------------

def train_config(run: Run, opts):
    from sra.objectives import AlignConfig, MixConfig, RepaConfig
    from sra.train import TrainConfig

    align = AlignConfig(**{**SRA_MAIN, **run.align}, teacher_bf16=None)
    return TrainConfig(model=opts.model, depth=run.depth, data_dir=opts.data_dir, output_dir=str(opts.runs_dir), exp_name=run.name,
                       max_train_steps=run.steps, seed=run.seed, align=align, mix=MixConfig(**run.mix),
                       repa=RepaConfig(**run.repa), checkpoint_every=opts.checkpoint_every,
                       sample_every=run.steps, log_every=opts.log_every, progress=False,
                       ema_half_life_kimg=opts.ema_half_life_kimg, ema_warmup=False)


def read_results(path: Path) -> list[dict]:
    """The rows of a JSONL file (results or a run's metrics); a line cut by a kill is skipped (an evaluation it held
    is redone)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


def done_pairs(path: Path) -> set[tuple[str, int]]:
    return {(r["run"], int(r["step"])) for r in read_results(path)}


def probed(opts) -> set[tuple[str, int]]:
    return {(r["run"], int(r["step"])) for r in read_results(sibling(opts, "_probe.jsonl"))}


def probe_steps(run: Run, opts) -> list[int]:
    """Probed checkpoints: the midpoint and the end of probe runs."""
    return sorted({run.steps // 2, run.steps}) if run.probe else []


def probe_run(run: Run, step: int, opts) -> None:
    """Linear-probe accuracy (sra probe's logistic probe on mean-pooled tokens, null label) of the EMA's student-block
    tokens at PROBE_TIMES; one line per (run, step) appended to <results>_probe.jsonl."""
    from sra.commands.probe import split_data
    from sra.evaluation.probe import linear_probe, sample_indices
    from sra.models.loading import load_model
    from sra.checkpoint import checkpoint_path

    t0 = time.perf_counter()
    loaded = load_model(checkpoint_path(Path(opts.runs_dir) / run.name, step))
    train, train_pool, test, test_pool = split_data(opts.data_dir, 0)
    res = linear_probe(loaded.model, "SiT", train, test,
                       train_indices=train_pool[sample_indices(len(train_pool), opts.probe_train, 0)],
                       test_indices=test_pool[sample_indices(len(test_pool), opts.probe_test, 0)],
                       blocks=[run.probe_block], times=list(PROBE_TIMES), progress=False)
    row = {"run": run.name, "step": step, "block": run.probe_block, "times": list(PROBE_TIMES),
           "accuracy": res.accuracy[0], "num_train": res.num_train, "num_test": res.num_test,
           "seconds": time.perf_counter() - t0, "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    with open(sibling(opts, "_probe.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")
    print(f"{run.name} @ {step}: probe block {run.probe_block} at t={PROBE_TIMES}: {res.accuracy[0]}", flush=True)
    if run.depth:
        similarity_rows(run, step, loaded.model, opts)


def similarity_rows(run: Run, step: int, model, opts) -> None:
    """How near-linear is the teacher block's token map of the student block's in this run? benchmarks/
    fmnist_token_similarity.py's measures (512 test images, both at the same t, no head) for the SRA pair of the deep
    setting and for the 6-block setting's pair (2, 4), appended to <results>_similarity.jsonl."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fmnist_token_similarity import similarity
    from sra.data.pixels import fashion_mnist_dataset

    test = fashion_mnist_dataset(opts.data_dir, split="test")
    x, y = test.x[:512].float(), test.y[:512]
    with open(sibling(opts, "_similarity.jsonl"), "a") as f:
        for blocks in (DEEP_BLOCKS, (2, 4)):
            for t in SIMILARITY_TIMES:
                r = similarity(model.eval(), x, y, t, *blocks, seed=0)
                f.write(json.dumps({"run": run.name, "step": step, "blocks": list(blocks), "t": t, "images": len(x),
                                    **r, "time": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")


def train_seconds(run_dir: Path, step: int, log_every: int, batch: int) -> float | None:
    """Training time to `step`: the logged intervals (images / images_per_s), deduplicated by step across resumes."""
    per_step = {}
    for r in read_results(run_dir / "metrics.jsonl"):
        if "images_per_s" in r and r["step"] <= step:
            span = r["step"] - (r["step"] - 1) // log_every * log_every  # steps in this logging interval
            per_step[r["step"]] = span * batch / r["images_per_s"]
    return sum(per_step.values()) if per_step else None


def run_one(run: Run, opts) -> None:
    """Worker body (a subprocess): train to each evaluated (or probed) step in turn, evaluate it once, go on to
    run.steps. Training on to the next step resumes the run, which continues bit-identically, so the results equal a
    straight run's; a run cut short still leaves its earlier evaluations."""
    import torch

    torch.set_num_threads(opts.threads)
    from sra.evaluation.fmnist import evaluate_fmnist_for_training
    from sra.models.loading import load_model
    from sra.train import train
    from sra.checkpoint import checkpoint_path, latest_checkpoint

    run_dir = Path(opts.runs_dir) / run.name
    results = Path(opts.results)
    for step in sorted(set(run.eval_steps) | set(probe_steps(run, opts)) | {run.steps}):
        last = latest_checkpoint(run_dir)
        if last is None or int(last.stem) < step:
            t0 = time.perf_counter()
            train(dataclasses.replace(train_config(run, opts), max_train_steps=step))
            print(f"{run.name}: trained to {step} ({time.perf_counter() - t0:.0f} s this call)", flush=True)
        if step in probe_steps(run, opts) and (run.name, step) not in probed(opts):
            probe_run(run, step, opts)
        if step not in run.eval_steps or (run.name, step) in done_pairs(results):
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
               "depth": run.depth,
               "align": {**SRA_MAIN, **run.align}, "mix": run.mix, "repa": run.repa,
               "ema_half_life_kimg": opts.ema_half_life_kimg, "ema_warmup": False,
               "time": time.strftime("%Y-%m-%d %H:%M:%S")}
        results.parent.mkdir(parents=True, exist_ok=True)
        with open(results, "a") as f:  # one short line per write: concurrent workers do not interleave
            f.write(json.dumps(row) + "\n")
        print(f"{run.name} @ {step}: FD {row['fd_fmnist']:.2f}, acc {row['class_acc']:.3f} "
              f"({row['eval_seconds']:.0f} s)", flush=True)


# ----------------------------------------------------------------------------------------------------------------
# The scheduler: pending runs to --jobs subprocesses
# ----------------------------------------------------------------------------------------------------------------

def pending(runs: list[Run], opts) -> list[Run]:
    done, probes = done_pairs(Path(opts.results)), probed(opts)
    return [r for r in runs if any((r.name, s) not in done for s in r.eval_steps)
            or any((r.name, s) not in probes for s in probe_steps(r, opts))]


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

def latest_rows(path: Path) -> dict[tuple[str, int], dict]:
    """The last evaluation of each (run, step) (a redone evaluation replaces an earlier one)."""
    return {(r["run"], int(r["step"])): r for r in read_results(path)}


def mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean and half the range (with 2 seeds: the distance of each seed from the mean)."""
    return sum(values) / len(values), (max(values) - min(values)) / 2


def fmt(values: list[float], digits: int = 1, scale: float = 1.0) -> str:
    if not values:
        return "—"
    m, h = mean_spread([v * scale for v in values])
    return f"{m:.{digits}f} ± {h:.{digits}f} (n={len(values)})" if len(values) > 1 else f"{m:.{digits}f} (n=1)"


def seed_spread(*groups: list[float]) -> float | None:
    """The largest max − min within any group of two or more seeds (None when no group has two)."""
    ranges = [max(v) - min(v) for v in groups if len(v) > 1]
    return max(ranges) if ranges else None


def sibling(opts, suffix: str) -> Path:
    """A file kept beside the results file: <results stem><suffix> (the notes, the loss curves)."""
    results = Path(opts.results)
    return results.with_name(results.stem + suffix)


def is_main_run(name: str, method: str = "(plain|sra)") -> bool:
    """A main-comparison run name such as plain-s0 or sra-s12 (not an ablation such as sra-sml1-0.2-s0)."""
    return re.fullmatch(rf"{method}-s\d+", name) is not None


def by_method(rows: dict, method: str, step: int, key: str) -> list[float]:
    return [r[key] for (name, s), r in sorted(rows.items()) if s == step and r["group"] == "main"
            and is_main_run(name, method)]


def plot_fd(rows: dict, out: Path, num_samples: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for method, color in (("plain", "tab:blue"), ("sra", "tab:orange")):
        runs = sorted({n for (n, _), r in rows.items() if r["group"] == "main" and is_main_run(n, method)})
        for ax, key, scale in ((axes[0], "fd_fmnist", 1.0), (axes[1], "class_acc", 100.0)):
            for n in runs:
                pts = sorted((s, r[key] * scale) for (m, s), r in rows.items() if m == n)
                ax.plot(*zip(*pts), color=color, alpha=0.45, lw=1, ls="--", marker=".")
            steps = sorted({s for (n, s), r in rows.items() if n in runs})
            means = [(s, mean_spread([v * scale for v in by_method(rows, method, s, key)])[0]) for s in steps]
            label = "plain" if method == "plain" else "SRA (2→4, cos, λ=0.5)"
            if means:
                ax.plot(*zip(*means), color=color, lw=2.2, marker="o", label=f"{label}: mean (dashed: seeds)")
    axes[0].set(xlabel="training step", ylabel="FD-FMNIST (lower is better)", yscale="log",
                title=f"FD-FMNIST of the EMA, {num_samples} samples")
    axes[1].set(xlabel="training step", ylabel="classifier accuracy on samples (%)",
                title="samples labelled as their class")
    for ax in axes:
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def compose_grids(opts, step: int, out: Path) -> bool:
    """Final sample grids of plain and SRA seed 0 side by side (same noise, rows = classes 0..9)."""
    from PIL import Image, ImageDraw, ImageFont

    files = [Path(opts.runs_dir) / n / "samples" / f"{step:07d}.png" for n in ("plain-s0", "sra-s0")]
    if not all(f.exists() for f in files):
        return False
    imgs = [Image.open(f).convert("L") for f in files]
    w, h, gap, top = imgs[0].width, imgs[0].height, 24, 28
    canvas = Image.new("L", (2 * w + gap, h + top), 255)
    draw = ImageDraw.Draw(canvas)
    try:
        font = ImageFont.load_default(size=18)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        font = ImageFont.load_default()
    for i, (img, title) in enumerate(zip(imgs, ("plain, seed 0", "SRA, seed 0"))):
        canvas.paste(img, (i * (w + gap), top))
        draw.text((i * (w + gap) + 4, 4), f"{title}, step {step}", fill=0, font=font)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    return True


def conclusion(rows: dict, opts, old: dict | None = None) -> list[str]:
    main_steps = sorted({s for (n, s), r in rows.items() if r["group"] == "main"})
    if not main_steps:
        return ["No main-comparison results yet."]
    lines = []
    final = main_steps[-1]
    p, q = by_method(rows, "plain", final, "fd_fmnist"), by_method(rows, "sra", final, "fd_fmnist")
    pa, qa = by_method(rows, "plain", final, "class_acc"), by_method(rows, "sra", final, "class_acc")
    if p and q:
        d = mean_spread(q)[0] - mean_spread(p)[0]
        if min(len(p), len(q)) > 1:
            noise = seed_spread(p, q)
            verdict = ("the difference is within the seed-to-seed spread, i.e. not evidence either way"
                       if abs(d) <= noise else ("SRA is lower (better) by more than the seed spread" if d < 0
                                                else "SRA is higher (worse) by more than the seed spread"))
            spread = f"the largest difference between two seeds of the same method is {noise:.1f}: **{verdict}**"
        else:
            spread = "**one seed per method: no statement about noise is possible**"
        lines.append(f"- **Main comparison at step {final}** ({len(p)} plain and {len(q)} SRA seeds): FD-FMNIST "
                     f"{mean_spread(p)[0]:.1f} (plain) vs {mean_spread(q)[0]:.1f} (SRA), difference {d:+.1f}; {spread}. "
                     f"Classifier accuracy on samples: {100 * mean_spread(pa)[0]:.1f} % vs {100 * mean_spread(qa)[0]:.1f} %.")
        per_step = []
        for s in main_steps:
            a, b = by_method(rows, "plain", s, "fd_fmnist"), by_method(rows, "sra", s, "fd_fmnist")
            if len(a) > 1 and len(b) > 1:
                dd, nn = mean_spread(b)[0] - mean_spread(a)[0], seed_spread(a, b)
                word = "within spread" if abs(dd) <= nn else ("SRA better" if dd < 0 else "SRA worse")
                per_step.append(f"step {s}: {dd:+.1f} vs seed spread {nn:.1f} ({word})")
        if per_step:
            lines.append("- Step by step (Δ FD = SRA − plain against the largest same-method seed difference): "
                         + "; ".join(per_step) + "."
                         + ("" if per_step[-1].endswith("(SRA better)") else " No lasting, beyond-the-spread gain "
                            "for SRA: nothing like the training speed-up the paper reports at ImageNet scale."))
    first = main_steps[0]
    p0 = by_method(rows, "plain", first, "fd_fmnist")
    if p0 and p and first != final and mean_spread(p)[0] < 0.8 * mean_spread(p0)[0]:
        lines.append(f"- **What does help at this scale: training longer.** Plain FD-FMNIST falls from "
                     f"{mean_spread(p0)[0]:.1f} at step {first} to {mean_spread(p)[0]:.1f} at step {final} "
                     f"(×{mean_spread(p0)[0] / max(mean_spread(p)[0], 1e-9):.1f}); compare with the SRA − plain "
                     "differences in the table.")
    ema, beyond = [], []
    for s in main_steps if old else []:
        a, b = by_method(old, "plain", s, "fd_fmnist"), by_method(rows, "plain", s, "fd_fmnist")
        if len(a) > 1 and len(b) > 1:
            dd, nn = mean_spread(b)[0] - mean_spread(a)[0], seed_spread(a, b)
            ema.append(f"step {s}: {dd:+.1f} vs seed spread {nn:.1f}")
            if abs(dd) > nn:
                beyond.append(f"{s} ({'half-life' if dd < 0 else 'warm-up'} EMA better)")
    if ema:
        lines.append(("- **The EMA mattered more than SRA here.** " if beyond else "- EMA: ")
                     + f"Plain FD-FMNIST with the {opts.ema_half_life_kimg:g} kimg half-life minus plain with the "
                     "earlier warm-up EMA (see 'What the EMA does'): " + "; ".join(ema) + ". Beyond the seed spread "
                     + (f"at step{'s' * (len(beyond) > 1)} {', '.join(beyond)}" if beyond else "at no step") + ".")
    tp, tq = by_method(rows, "plain", final, "train_seconds"), by_method(rows, "sra", final, "train_seconds")
    if tp and tq and all(tp + tq):
        ratio = mean_spread(tq)[0] / mean_spread(tp)[0]
        lines.append(f"- Cost: an SRA step took {ratio:.2f}× a plain step in these runs (wall-clock, "
                     f"{opts.jobs} runs at a time on 2 cores); at equal compute plain would have trained about {final * ratio:.0f} steps, which "
                     "would favour plain further while FD is still falling this fast with steps.")
    ref_step = opts.ablation_steps
    abl = {n: r for (n, s), r in rows.items() if r["group"] == "ablation" and s == ref_step}
    ref, plain = rows.get(("sra-s0", ref_step)), rows.get(("plain-s0", ref_step))
    if abl and ref:
        noise = seed_spread(*(by_method(rows, m, ref_step, "fd_fmnist") for m in ("plain", "sra")))
        best = min(abl.values(), key=lambda r: r["fd_fmnist"])
        lines.append(f"- **Ablations at step {ref_step}** (one seed each): SRA reference {ref['fd_fmnist']:.1f}; "
                     + (f"the best of {len(abl)} ablation rows" if len(abl) > 1 else "the one ablation row run")
                     + f" is '{best['label']}' at {best['fd_fmnist']:.1f}. "
                     + (f"Two seeds of the same setting differ by up to {noise:.1f} at this step, so ablation "
                        f"differences smaller than that are not evidence." if noise is not None else ""))
        if noise is not None and plain:
            beyond = [r["label"] for r in abl.values() if abs(r["fd_fmnist"] - plain["fd_fmnist"]) > noise]
            lines.append(f"- Against plain training at step {ref_step} ({plain['fd_fmnist']:.1f}): "
                         + (f"{len(beyond)} of {len(abl)} SRA variants differ by more than that spread: "
                            + "; ".join(beyond) + "." if beyond else
                            f"none of the {len(abl)} SRA variants differs by more than that spread (their FD-FMNIST "
                            f"spans {min(r['fd_fmnist'] for r in abl.values()):.1f} … "
                            f"{max(r['fd_fmnist'] for r in abl.values()):.1f}), so no choice of layers, interval, λ, "
                            "head, distance or teacher moved SRA away from plain training at this scale."))
    elif ref:
        lines.append("- No ablation run finished within the budget (see the ablation section).")
    return lines


def collect_losses(opts) -> dict[str, dict[str, dict[str, float]]]:
    """Logged training losses of every run folder, merged into RESULTS' sibling *_losses.json (kept when run folders
    are gone): {run: {step: {"denoise": ..., "align": ...}}}, each value the mean over its logging interval."""
    path = sibling(opts, "_losses.json")
    losses = json.loads(path.read_text()) if path.exists() else {}
    runs_dir = Path(opts.runs_dir)
    for f in sorted(runs_dir.glob("*/metrics.jsonl")) if runs_dir.exists() else []:
        curve = {str(r["step"]): {k: r[k] for k in ("denoise", "align") if k in r}
                 for r in read_results(f) if "denoise" in r}  # training lines, not evaluation lines
        if curve and len(curve) >= len(losses.get(f.parent.name, {})):  # a retraining still in progress does not
            losses[f.parent.name] = curve                                 # replace a finished run's curve
    if losses:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(losses, indent=0, sort_keys=True) + "\n")
    return losses


def window_mean(curve: dict, key: str, step: int, width: int) -> float | None:
    v = [c[key] for s, c in curve.items() if step - width < int(s) <= step and key in c]
    return sum(v) / len(v) if v else None


def losses_section(losses: dict, rows: dict, docs: Path, opts) -> list[str]:
    """Denoising loss of plain vs SRA (same seeds: same data, noise and t) and the size of the alignment term."""
    main = sorted(n for n in losses if is_main_run(n))
    steps = sorted({s for (n, s), r in rows.items() if r["group"] == "main"})
    if not main or not steps:
        return []
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for n in main:
        pts = sorted((int(s), c) for s, c in losses[n].items())
        style = dict(color="tab:blue" if n.startswith("plain") else "tab:orange", alpha=0.7, lw=1, label=n,
                     ls=("-", "--", ":", "-.")[int(n.rsplit("-s", 1)[1]) % 4])
        axes[0].plot([s for s, _ in pts], [c["denoise"] for _, c in pts], **style)
        if n.startswith("sra"):
            axes[1].plot([s for s, _ in pts], [c["align"] for _, c in pts], **style)
    axes[0].set(xlabel="training step", ylabel="denoising loss (per logging interval)", yscale="log",
                title="flow-matching loss")
    axes[1].set(xlabel="training step", ylabel="1 − cos (student head vs teacher)", yscale="log",
                title="SRA alignment term (before λ)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = docs / "fmnist_losses.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    w = 4 * opts.log_every
    L = ["", "## Training losses", "",
         f"Mean of the logged values over the {w} steps up to each step, mean over seeds (from the run folders' "
         f"metrics.jsonl, kept in `{os.path.relpath(sibling(opts, '_losses.json'), ROOT)}`). "
         "Same seed means the same images, noise and t in both methods, so the denoising losses compare directly.", "",
         "| step | denoising loss plain | denoising loss SRA | alignment term SRA (1 − cos) | λ · alignment / total SRA loss |",
         "|---:|---:|---:|---:|---:|"]

    def avg(method: str, key: str, step: int) -> float | None:
        v = [window_mean(losses[n], key, step, w) for n in main if is_main_run(n, method)]
        v = [x for x in v if x is not None]
        return sum(v) / len(v) if v else None

    weight = SRA_MAIN["weight"]
    for s in steps:
        dp, ds, al = avg("plain", "denoise", s), avg("sra", "denoise", s), avg("sra", "align", s)
        share = f"{100 * weight * al / (ds + weight * al):.1f} %" if ds is not None and al is not None else "—"
        L.append(f"| {s} | " + " | ".join("—" if x is None else f"{x:.4f}" for x in (dp, ds, al)) + f" | {share} |")
    L += ["", f"![training losses]({os.path.relpath(out, docs)})"]
    return L


def report(opts) -> None:
    """docs/RESULTS.md, the FD plot and the sample grids, from the results file (and the run folders' grids)."""
    rows = latest_rows(Path(opts.results))
    losses = collect_losses(opts)
    old = latest_rows(Path(opts.compare_results)) if opts.compare_results else {}
    docs = Path(opts.docs_dir)
    docs.mkdir(parents=True, exist_ok=True)
    main_steps = sorted({s for (n, s), r in rows.items() if r["group"] == "main"})
    plot = docs / "fmnist_fd_vs_steps.png"
    if main_steps:
        plot_fd(rows, plot, opts.eval_samples)
    grids = docs / "fmnist_samples_plain_vs_sra.png"
    compose_grids(opts, opts.steps, grids)
    rel = os.path.relpath
    H = opts.ema_half_life_kimg
    L = ["# Does SRA help? A small controlled study on Fashion-MNIST (CPU)", "",
         f"*Generated by `python benchmarks/fmnist_study.py --report` from `{rel(opts.results, docs)}` "
         f"({len(rows)} evaluations); do not edit by hand.*", "",
         "## Setup", "",
         f"- Model and data: the default `sra train` config: {opts.model} (depth 6, width 128, 4 heads, patch 4, "
         "1.9 M parameters) on 32×32×1 Fashion-MNIST (28×28 padded), batch 64, AdamW lr 1e-3 with a 200-step linear "
         "warm-up then constant, gradient clipping 1.0, uniform t, linear path, class dropout 0.1.",
         f"- EMA (sampling model and SRA teacher): set by its half-life, {H:g} kimg = {H * 1000 / 64:.0f} steps of 64 "
         f"images (decay {0.5 ** (64 / (H * 1000)):.4f} per step), constant, no warm-up, so the teacher averages the "
         f"student over its last ~{H * 1000 / 64:.0f} steps at every point of the run: it trails the student (which "
         "is what SRA needs) without lagging a whole phase of a short run behind. The random initial weights keep "
         f"{100 * 0.5 ** (300 * 64 / (H * 1000)):.1f} % of the EMA at step 300, the first evaluated checkpoint. "
         "(For scale: the paper's decay 0.9999 at batch 256 is a half-life of about 1.7 % of a 400K-step run; here "
         f"it is {100 * H * 1000 / 64 / opts.steps:.1f} % of the {opts.steps}-step main runs.)",
         "- SRA (main setting, the tiny preset's default): student block 2 → teacher block 4 (teacher runs 4 of 6 "
         "blocks, fp32), per-token cosine distance, λ = 0.5, teacher time t' = t − k with k ~ U(0, 0.2), projection "
         "head. Plain = the same config with λ = 0. Same seed ⇒ same initialisation, data order, noise and t draws.",
         f"- Evaluation: each checkpoint's EMA generates {opts.eval_samples} class-balanced samples (label i mod 10) "
         f"with the Euler ODE, {opts.sample_steps} steps, no guidance, noise seed {SAMPLING_SEED} (identical for every "
         "row); FD-FMNIST is the Fréchet distance in the cached Fashion-MNIST classifier's 128-d features against the "
         "10 000 test images, and accuracy is the share of samples that classifier labels as their conditioning class.",
         f"- Compute: 2 CPU cores; {opts.jobs} runs at a time, {opts.threads} torch thread each. Wall-clock "
         "numbers below depend on what else ran on the machine (see the notes) and are only indicative.", "",
         "## Main comparison: plain vs SRA", "",
         "Mean ± half the range, (max − min)/2, over the n seeds of each cell.", "",
         "| step | FD-FMNIST plain | FD-FMNIST SRA | Δ FD (SRA − plain) | accuracy plain (%) | accuracy SRA (%) |",
         "|---:|---|---|---:|---|---|"]
    for s in main_steps:
        p, q = by_method(rows, "plain", s, "fd_fmnist"), by_method(rows, "sra", s, "fd_fmnist")
        d = f"{mean_spread(q)[0] - mean_spread(p)[0]:+.1f}" if p and q else "—"
        L.append(f"| {s} | {fmt(p)} | {fmt(q)} | {d} | {fmt(by_method(rows, 'plain', s, 'class_acc'), 1, 100)} | "
                 f"{fmt(by_method(rows, 'sra', s, 'class_acc'), 1, 100)} |")
    L += ["", "Per seed (FD-FMNIST / accuracy %):", "", "| run | " + " | ".join(map(str, main_steps)) + " |",
          "|---|" + "---|" * len(main_steps)]
    for name in sorted({n for (n, s), r in rows.items() if r["group"] == "main"}):
        cells = [f"{rows[(name, s)]['fd_fmnist']:.1f} / {100 * rows[(name, s)]['class_acc']:.1f}"
                 if (name, s) in rows else "—" for s in main_steps]
        L.append(f"| {name} | " + " | ".join(cells) + " |")
    if main_steps:
        L += ["", f"![FD-FMNIST against training steps]({rel(plot, docs)})"]
    if not opts.quick:
        L += ablation_section(rows, losses, opts)
    L += family_section(rows, opts)
    L += deep_section(rows, opts)
    L += losses_section(losses, rows, docs, opts)
    L += ema_section(rows, old, opts)
    L += wallclock_section(rows)
    if grids.exists():
        L += ["", "## Samples", "", "Final EMA sample grids of seed 0 (rows: classes 0–9, i.e. T-shirt, trouser, "
              "pullover, dress, coat, sandal, shirt, sneaker, bag, ankle boot; same noise for both runs):", "",
              f"![plain vs SRA samples]({rel(grids, docs)})"]
    notes = sibling(opts, "_notes.md")
    if notes.exists():
        L += ["", notes.read_text().strip()]
    L += ["", "## Conclusion (computed from the numbers above)", ""] + conclusion(rows, opts, old)
    L += ["", "## Commands", "", "```",
          "# everything (resumable: re-running continues the runs and skips finished evaluations), then this report",
          "python benchmarks/fmnist_study.py --jobs 2 --threads 1",
          "# parts of it (each resumable; the exact sequence behind this report is in the notes above)",
          "python benchmarks/fmnist_study.py --only main                    # 3 seeds x {plain, SRA}, 1200 steps",
          "python benchmarks/fmnist_study.py --only main --runs sra-s2      # one main run",
          "python benchmarks/fmnist_study.py --only ablations               # the ten one-seed rows, 600 steps",
          "python benchmarks/fmnist_study.py --runs sra-no-head-s0           # one ablation row",
          "python benchmarks/fmnist_study.py --only family --jobs 2         # the self-alignment family rows + probes",
          "python benchmarks/fmnist_study.py --only deep --jobs 2           # the 12-block runs + probes + similarity",
          "python benchmarks/fmnist_study.py --report                       # rewrite this file",
          "# one run by hand, e.g. the SRA seed-0 run (what the script runs in each subprocess)",
          "OMP_NUM_THREADS=1 sra train --output-dir runs/study --exp-name sra-s0 --max-train-steps 1200 --seed 0 \\",
          "    --checkpoint-every 300 --sample-every 1200 --block-out-s 2 --block-out-t 4 --sra-weight 0.5 \\",
          f"    --ema-half-life-kimg {H:g} --no-ema-warmup",
          "# the family's runs add to that command (with their own --exp-name):",
          "#   SRA + DTS + AS: --mask-ratio 0.25          DTS + AS alone: --mask-ratio 0.25 --sra-weight 0",
          "#   Self-Flow teacher: --mask-ratio 0.25 --teacher-t self_flow --no-teacher-mask",
          "#   REPA: --sra-weight 0 --repa-weight 0.5 --repa-encoder fmnist --repa-block 2 --projector-dim 256",
          "# the deep runs: --depth 12 --block-out-s 3 --block-out-t 8 (plain: with --sra-weight 0; DTS + AS: with "
          "--mask-ratio 0.25)",
          "# smoke test (~2 min when the machine is free)",
          "python benchmarks/fmnist_study.py --quick --runs-dir /tmp/q/runs --results /tmp/q/r.jsonl --docs-dir /tmp/q/docs",
          "```", ""]
    (docs / "RESULTS.md").write_text("\n".join(L))
    print(f"wrote {docs / 'RESULTS.md'}", flush=True)


def family_section(rows: dict, opts) -> list[str]:
    """Issue 16: the self-alignment family on the same model, data, steps and seeds as the main comparison."""
    steps = sorted({opts.steps // 2, opts.steps})
    probes = {}  # run -> its latest probed step's row
    for r in sorted(read_results(sibling(opts, "_probe.jsonl")), key=lambda r: r["step"]):
        probes[r["run"]] = r
    want = family_runs(opts)
    L = ["", "## The self-alignment family: DTS + AS, Self-Flow's teacher, REPA", "",
         "Same model, data, optimiser, EMA, seeds and evaluation as the main comparison; each row changes the "
         "objective only (`sra train` flags in the commands below). DTS + AS is the authors' SiT-SRA_DTS_AS recipe: "
         "each image's 64 tokens split at random 16 / 48 (mask ratio 0.25), the two groups noised at independent "
         "times, each token's adaLN conditioned on its own time, attention only within a group; with SRA the EMA "
         "teacher sees the same groups at t_g − U(0, 0.2). The Self-Flow row gives that teacher the whole image at "
         "the lower of the two times instead. REPA aligns block 2 to the FD-FMNIST classifier's 8×8×64 conv features "
         "(the classifier is also the evaluation's feature extractor, so REPA's FD here is not an independent "
         "measurement: it is trained towards the metric's own features). Probe: linear-probe test accuracy (%) of "
         f"the final EMA's mean-pooled block-{SRA_MAIN['block_out_s']} tokens (null label) at t = "
         f"{', '.join(f'{t:g}' for t in PROBE_TIMES)} ({opts.probe_train} training / {opts.probe_test} test images, "
         "seed 0 runs only): the mechanism the follow-up paper argues from is that alignment makes the student's "
         "tokens more semantic at high noise.", "",
         "| method | " + " | ".join(f"FD-FMNIST @ {s}" for s in steps) + f" | Δ FD vs plain @ {opts.steps} | "
         f"accuracy @ {opts.steps} (%) | s/step | probe t={'/'.join(f'{t:g}' for t in PROBE_TIMES)} (%) |",
         "|---|" + "---|" * len(steps) + "---:|---|---:|---|"]
    plain = {r["seed"]: r["fd_fmnist"] for (n, s), r in rows.items() if s == opts.steps and is_main_run(n, "plain")}
    methods = [("plain", "plain (λ = 0)", "main"), ("sra", "SRA (main setting)", "main")] + \
        [(name, label, "family") for name, label, *_ in FAMILY]
    for name, label, group in methods:
        at = lambda s: [r for (n, st), r in sorted(rows.items())  # noqa: E731
                        if st == s and r["group"] == group and is_main_run(n, re.escape(name))]
        last = at(opts.steps)
        diffs = [r["fd_fmnist"] - plain[r["seed"]] for r in last if r["seed"] in plain]
        d = f"{mean_spread(diffs)[0]:+.1f}" + (f" (n={len(diffs)})" if diffs else "") if diffs else "—"
        pr = probes.get(f"{name}-s{opts.seeds[0]}")
        pr = " / ".join(f"{100 * a:.1f}" for a in pr["accuracy"]) + \
            (f" (step {pr['step']})" if pr["step"] != opts.steps else "") if pr else "—"
        sps = [r["train_seconds"] / r["step"] for r in last if r.get("train_seconds")]
        sps = f"{sum(sps) / len(sps):.2f}" if sps else "—"
        L.append(f"| {label} | " + " | ".join(fmt([r["fd_fmnist"] for r in at(s)]) for s in steps) +
                 f" | {d} | {fmt([r['class_acc'] for r in last], 1, 100)} | {sps} | {pr} |")
    missing = [r.name for r in want if r.group == "family" and (r.name, opts.steps) not in rows]
    no_probe = [r.name for r in want if r.probe and probes.get(r.name, {}).get("step") != opts.steps]
    L += ["", "FD-FMNIST and accuracy: mean ± half the range over the seeds that finished (n); Δ FD pairs each run "
          "with the plain run of the same seed. s/step: training only, on a shared 2-core machine (indicative)."]
    if missing or no_probe:
        L += ["", "**Still missing** (compute ran out before the deadline; the command below resumes exactly where "
              f"it stopped): runs {', '.join(missing) or 'none'}; probes {', '.join(no_probe) or 'none'}. Complete "
              "them with `python benchmarks/fmnist_study.py --only family --jobs 2 --threads 1`."]
    return L


def deep_section(rows: dict, opts) -> list[str]:
    """Issue 16, point 4: the 12-block setting, seed 0; nothing until one of its runs is evaluated or measured."""
    want = deep_runs(opts)
    sims = read_results(sibling(opts, "_similarity.jsonl"))
    if not any(r.name == n for r in want for n, _ in rows) and not sims:
        return []
    steps = sorted({opts.steps // 2, opts.steps})
    probes = {(r["run"], r["step"]): r for r in read_results(sibling(opts, "_probe.jsonl"))}
    plain = rows.get((want[0].name, opts.steps))
    L = ["", f"## Deeper: {DEEP_DEPTH} blocks, SRA {DEEP_BLOCKS[0]} → {DEEP_BLOCKS[1]} (seed {want[0].seed})", "",
         f"The main setting's width, data, optimiser, EMA and evaluation with {DEEP_DEPTH} blocks instead of 6 "
         f"(`--depth {DEEP_DEPTH}`), SRA from block {DEEP_BLOCKS[0]} to block {DEEP_BLOCKS[1]} (the paper's layers "
         f"for 12-block SiT-S/B). Probe: as in the family section, of block {DEEP_BLOCKS[0]}'s tokens. One seed: "
         "the 6-block runs' seed-to-seed spread (±10 FD at 1200 steps) is the yardstick for any difference.", "",
         "| run | " + " | ".join(f"FD-FMNIST @ {s}" for s in steps) + f" | Δ FD vs plain @ {opts.steps} | "
         f"accuracy @ {opts.steps} (%) | s/step | probe t={'/'.join(f'{t:g}' for t in PROBE_TIMES)} (%) |",
         "|---|" + "---|" * len(steps) + "---:|---:|---:|---|"]
    for run in want:
        cells = [f"{rows[(run.name, s)]['fd_fmnist']:.1f}" if (run.name, s) in rows else "—" for s in steps]
        last = rows.get((run.name, opts.steps))
        d = f"{last['fd_fmnist'] - plain['fd_fmnist']:+.1f}" if last and plain and run is not want[0] else "—"
        acc = f"{100 * last['class_acc']:.1f}" if last else "—"
        pr = max((r for (n, _), r in probes.items() if n == run.name), key=lambda r: r["step"], default=None)
        pr = " / ".join(f"{100 * a:.1f}" for a in pr["accuracy"]) + \
            (f" (step {pr['step']})" if pr["step"] != opts.steps else "") if pr else "—"
        L.append(f"| {run.label} | " + " | ".join(cells) + f" | {d} | {acc} | {s_per_step(last or {})} | {pr} |")
    if sims:
        L += ["", "Is the teacher block's token a near-linear map of the student block's? "
              "(`benchmarks/fmnist_token_similarity.py`'s measures on the EMA at the step shown: 512 test images, both blocks at "
              "the same t, no head; R² of a least-squares linear map fitted on half the images, on the other half. "
              "The 6-block plain-s0 run had R² 0.95–0.97 for blocks 2 → 4.)", "",
              "| run | step | blocks | t | cos | cos, centred | R² linear |", "|---|---:|---|---:|---:|---:|---:|"]
        last = {}  # the latest measured step of each (run, blocks, t)
        for r in sorted(sims, key=lambda r: r["step"]):
            last[(r["run"], tuple(r["blocks"]), r["t"])] = r
        for (name, blocks, t), r in sorted(last.items()):
            L.append(f"| {name} | {r['step']} | {blocks[0]} → {blocks[1]} | {t:g} | {r['cos']:.3f} | "
                     f"{r['cos_centred']:.3f} | {r['r2_linear']:.3f} |")
    missing = [r.name for r in want if (r.name, opts.steps) not in rows or (r.name, opts.steps) not in probes]
    if missing:
        L += ["", f"**Still missing:** {', '.join(missing)}. Resume with `python benchmarks/fmnist_study.py --only deep "
              "--jobs 2 --threads 1`."]
    return L


def s_per_step(r: dict) -> str:
    return f"{r['train_seconds'] / r['step']:.2f}" if r.get("train_seconds") else "—"


def ablation_section(rows: dict, losses: dict, opts) -> list[str]:
    step = opts.ablation_steps
    L = ["", f"## Ablations at step {step} (one seed each: seed 0)", "",
         f"Each row changes one thing from the SRA main setting and trains {step} steps with seed 0. The reference "
         f"rows are the {step}-step checkpoints of the main seed-0 runs (the learning rate is constant after warm-up "
         "and the EMA schedule does not depend on the run length, so those checkpoints are exactly what a shorter run "
         "gives). One seed per row: compare differences with the seed-to-seed spread of the main runs at the same "
         f"step. The alignment column is the SRA term before λ, in the row's own distance, averaged over the "
         f"{4 * opts.log_every} steps up to step {step}.", "",
         "| row | FD-FMNIST | Δ vs SRA ref | Δ vs plain ref | accuracy (%) | alignment term | s/step |",
         "|---|---:|---:|---:|---:|---:|---:|"]
    ref, plain = rows.get(("sra-s0", step)), rows.get(("plain-s0", step))
    refs = [("plain-s0", "**reference:** plain (λ = 0)"),
            ("sra-s0", "**reference:** SRA main: 2→4, cos, λ 0.5, U(0, 0.2), head, EMA teacher")]
    cut = [label for name, label, _ in ABLATIONS if (f"{name}-s0", step) not in rows]
    for name, label in refs + [(f"{n}-s0", label) for n, label, _ in ABLATIONS]:
        r = rows.get((name, step))
        if r is None:
            continue
        d_ref, d_plain = (f"{r['fd_fmnist'] - x['fd_fmnist']:+.1f}" if x else "—" for x in (ref, plain))
        al = window_mean(losses.get(name, {}), "align", step, 4 * opts.log_every)
        al = f"{al:.4f}" if al is not None else "—"
        L.append(f"| {label} | {r['fd_fmnist']:.1f} | {d_ref} | {d_plain} | {100 * r['class_acc']:.1f} | {al} | "
                 f"{s_per_step(r)} |")
    for m in ("plain", "sra"):
        v = by_method(rows, m, step, "fd_fmnist")
        if len(v) > 1:
            L.append(f"\nSeed-to-seed spread at step {step}, {m} ({len(v)} seeds): FD {min(v):.1f} … {max(v):.1f}.")
    if cut:
        L += ["", "**Not run (cut for the compute budget; listed in priority order, highest first):** "
              + "; ".join(cut) + "."]
    return L


def ema_section(rows: dict, old: dict, opts) -> list[str]:
    """The same main runs with the earlier EMA (the tiny preset's default warm-up cap), from an older results file."""
    steps = sorted({s for (n, s), r in rows.items() if r["group"] == "main"}
                   & {s for (n, s), r in old.items() if r.get("group") == "main"})
    if not steps:
        return []
    L = ["", "## What the EMA does at this scale", "",
         "The first version of this study (results kept in "
         f"`{os.path.relpath(opts.compare_results, ROOT)}`) used the tiny preset's default EMA, decay "
         "min(0.999, (1+n)/(10+n)) at step n, whose cap acts at every step of these runs: a half-life of about "
         "0.077·n steps that grows with the run (≈ 23 steps at n = 300, ≈ 46 at n = 600, ≈ 93 at n = 1200). Plain "
         "training never reads its EMA, but those runs also predate the switch to fused AdamW, which rounds "
         "differently: with the same seeds (same data, noise and t) the logged losses agree to 7 digits at step 50 "
         "and then drift apart, so the online weights are not the same in the two versions. Read a difference "
         "between the plain columns as the EMA's effect only where it is well beyond the seed spread. For SRA the "
         "EMA is also the teacher, so its training changes too.", "",
         f"| step | plain, warm-up EMA | plain, half-life {opts.ema_half_life_kimg:g} kimg | SRA, warm-up EMA | "
         f"SRA, half-life {opts.ema_half_life_kimg:g} kimg |", "|---:|---|---|---|---|"]
    for s in steps:
        cells = [fmt(by_method(r, m, s, "fd_fmnist")) for m in ("plain", "sra") for r in (old, rows)]
        L.append(f"| {s} | " + " | ".join(cells) + " |")
    L += ["", "FD-FMNIST, mean ± half the range over seeds."]
    return L


def wallclock_section(rows: dict) -> list[str]:
    L = ["", "## Wall-clock per run", "",
          "Training time is the sum of the logged intervals (excludes evaluation); evaluation is per checkpoint.", "",
          "| run | steps | training (min) | s/step | evaluation (s per checkpoint) |", "|---|---:|---:|---:|---:|"]
    for name in sorted({n for n, _ in rows}):
        rs = [r for (n, _), r in rows.items() if n == name]
        last = max(rs, key=lambda r: r["step"])
        ev = sum(r["eval_seconds"] for r in rs) / len(rs)
        tm = f"{last['train_seconds'] / 60:.1f}" if last.get("train_seconds") else "—"
        L.append(f"| {name} | {last['step']} | {tm} | {s_per_step(last)} | {ev:.0f} |")
    return L


def parse(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--only", default="all", choices=["all", "main", "ablations", "family", "deep"],
                    help="which runs (deep: the 12-block setting)")
    ap.add_argument("--runs", default=None, help="comma-separated run names to restrict to (e.g. plain-s0,sra-s0)")
    ap.add_argument("--steps", type=int, default=1200, help="optimizer steps of the main runs")
    ap.add_argument("--ablation-steps", type=int, default=600, help="optimizer steps of the ablation runs")
    ap.add_argument("--max-ablations", type=int, default=len(ABLATIONS), help="keep the first N ablations (priority order)")
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2],
                    help="training seeds of the main comparison, comma-separated")
    ap.add_argument("--eval-every", type=int, default=300, help="steps between evaluated checkpoints (main runs)")
    ap.add_argument("--checkpoint-every", type=int, default=300, help="steps between checkpoints")
    ap.add_argument("--log-every", type=int, default=50, help="steps between metrics lines")
    ap.add_argument("--probe-train", type=int, default=5000, help="training images of the family section's probe")
    ap.add_argument("--probe-test", type=int, default=2000, help="test images of the family section's probe")
    ap.add_argument("--eval-samples", type=int, default=1000, help="generated samples per evaluation (balanced classes)")
    ap.add_argument("--sample-steps", type=int, default=30, help="Euler ODE steps per sample")
    ap.add_argument("--model", default="SiT-T/4", help="preset")
    ap.add_argument("--ema-half-life-kimg", type=float, default=3.2,
                    help="EMA (sampling model and SRA teacher) half-life in thousands of images, constant, no warm-up "
                         "(3.2 = 50 steps of 64 images)")
    ap.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX folder (default: the system's)")
    ap.add_argument("--jobs", type=int, default=2, help="training subprocesses at a time")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per subprocess")
    ap.add_argument("--runs-dir", default=None, help="parent of the run folders (default runs/study)")
    ap.add_argument("--results", default=None, help="JSONL results file (default benchmarks/results/fmnist_study.jsonl)")
    ap.add_argument("--docs-dir", default=None, help="where RESULTS.md and the PNGs go (default docs)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 2 runs (plain, SRA) x 30 steps, 100 samples x 10 Euler steps, outputs under "
                         "runs/study-quick unless the paths are given")
    ap.add_argument("--compare-results", default=None,
                    help="results file of the earlier warm-up-EMA version, tabulated beside this one (default "
                         "benchmarks/results/fmnist_study_v1_warmup_ema.jsonl where it exists; not in --quick)")
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
    v1 = ROOT / "benchmarks" / "results" / "fmnist_study_v1_warmup_ema.jsonl"
    if opts.compare_results is None and not opts.quick and v1.exists():
        opts.compare_results = v1
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
