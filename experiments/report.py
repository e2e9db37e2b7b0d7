"""docs/RESULTS.md from the study's results: collect (collect.py: run folders -> results files in the repository),
then render: RESULTS.md and its figures (figures.py) from those files and the run table alone, so the report rebuilds
anywhere. study.py holds the table, the results files and the numbers the sections quote.

    python experiments/report.py                         # collect from runs/study (where it exists), then render
    python experiments/report.py --no-collect            # render from the stored results only
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

from collect import collect
from figures import compose_grids, plot_fd, plot_summary
from run import RESULTS, TABLE
from study import (STEM, Study, by_method, compared_methods, fmt, last_flag, latest_probes, latest_rows, mean_spread,
                   per_seed_delta, probe_cell, read_jsonl, s_per_step, seed_spread, verdict, window_mean)

ROOT = Path(__file__).resolve().parent.parent
__all__ = ["Study", "TABLE", "collect", "latest_rows", "render", "main"]  # what tests and callers use


# ----------------------------------------------------------------------------------------------------------------
# render: sections
# ----------------------------------------------------------------------------------------------------------------

def main_section(study: Study, rows: dict, plot: Path) -> list[str]:
    main_steps = sorted({s for (n, s) in rows if study.is_method(n, "main")})
    L = ["## Main comparison: plain vs SRA", "",
         "Mean ± half the range, (max − min)/2, over the n seeds of each cell.", "",
         "| step | FD-FMNIST plain | FD-FMNIST SRA | Δ FD (SRA − plain) | accuracy plain (%) | accuracy SRA (%) |",
         "|---:|---|---|---:|---|---|"]
    for s in main_steps:
        p, q = by_method(study, rows, "plain", s, "fd_fmnist"), by_method(study, rows, "sra", s, "fd_fmnist")
        d = f"{mean_spread(q)[0] - mean_spread(p)[0]:+.1f}" if p and q else "—"
        pa, qa = (by_method(study, rows, m, s, "class_acc") for m in ("plain", "sra"))
        L.append(f"| {s} | {fmt(p)} | {fmt(q)} | {d} | {fmt(pa, 1, 100)} | {fmt(qa, 1, 100)} |")
    L += ["", "Per seed (FD-FMNIST / accuracy %):", "", "| run | " + " | ".join(map(str, main_steps)) + " |",
          "|---|" + "---|" * len(main_steps)]
    for name in sorted({n for (n, _) in rows if study.is_method(n, "main")}):
        cells = [f"{rows[(name, s)]['fd_fmnist']:.1f} / {100 * rows[(name, s)]['class_acc']:.1f}"
                 if (name, s) in rows else "—" for s in main_steps]
        L.append(f"| {name} | " + " | ".join(cells) + " |")
    if main_steps:
        L += ["", f"![FD-FMNIST against training steps]({os.path.relpath(plot, study.docs)})"]
    return L


def ablation_section(study: Study, rows: dict, losses: dict) -> list[str]:
    step, methods = study.ablation_steps, study.table["sections"]["ablation"]["methods"]
    L = ["", f"## Ablations at step {step} (one seed each: seed 0)", "",
         f"Each row changes one thing from the SRA main setting and trains {step} steps with seed 0. The reference "
         f"rows are the {step}-step checkpoints of the main seed-0 runs (the learning rate is constant after warm-up "
         "and the EMA schedule does not depend on the run length, so those checkpoints are exactly what a shorter run "
         "gives). One seed per row: compare differences with the seed-to-seed spread of the main runs at the same "
         f"step. The alignment column is the SRA term before λ, in the row's own distance, averaged over the "
         f"{4 * study.log_every} steps up to step {step}.", "",
         "| row | FD-FMNIST | Δ vs SRA ref | Δ vs plain ref | accuracy (%) | alignment term | s/step |",
         "|---|---:|---:|---:|---:|---:|---:|"]
    ref, plain = rows.get(("sra-s0", step)), rows.get(("plain-s0", step))
    refs = [("plain-s0", "**reference:** plain (λ = 0)"),
            ("sra-s0", "**reference:** SRA main: 2→4, cos, λ 0.5, U(0, 0.2), head, EMA teacher")]
    cut = [m["label"] for m in methods if (f"{m['name']}-s0", step) not in rows]
    for name, label in refs + [(f"{m['name']}-s0", m["label"]) for m in methods]:
        r = rows.get((name, step))
        if r is None:
            continue
        d_ref, d_plain = (f"{r['fd_fmnist'] - x['fd_fmnist']:+.1f}" if x else "—" for x in (ref, plain))
        al = window_mean(losses.get(name, {}), "align", step, 4 * study.log_every)
        al = f"{al:.4f}" if al is not None else "—"
        L.append(f"| {label} | {r['fd_fmnist']:.1f} | {d_ref} | {d_plain} | {100 * r['class_acc']:.1f} | {al} | "
                 f"{s_per_step(r)} |")
    for m in ("plain", "sra"):
        v = by_method(study, rows, m, step, "fd_fmnist")
        if len(v) > 1:
            L.append(f"\nSeed-to-seed spread at step {step}, {m} ({len(v)} seeds): FD {min(v):.1f} … {max(v):.1f}.")
    if cut:
        L += ["", "**Not run (cut for the compute budget; listed in priority order, highest first):** "
              + "; ".join(cut) + "."]
    return L


def method_table(study: Study, rows: dict, probes: dict, methods: list[tuple[str, str, str]],
                 plain: tuple[str, str], steps: list[int], final: int) -> list[str]:
    """One row per method: FD at each step and accuracy at the end over the seeds that finished, Δ FD per seed against
    the plain method of the same seed, training s/step, the seed-0 probe. methods: (name, label, section)."""
    probe_seed = min(study.table["sections"][methods[-1][2]].get("probe", {}).get("seeds", [0]), default=0)
    L = ["| method | " + " | ".join(f"FD-FMNIST @ {s}" for s in steps) + f" | Δ FD vs plain @ {final} | "
         f"accuracy @ {final} (%) | s/step | probe t={'/'.join(f'{t:g}' for t in study.probe_times)} (%) |",
         "|---|" + "---|" * len(steps) + "---:|---|---:|---|"]
    base = {r["seed"]: r["fd_fmnist"] for (n, s), r in rows.items()
            if s == final and study.is_method(n, plain[1], plain[0])}
    for name, label, section in methods:
        at = lambda s: [r for (n, st), r in sorted(rows.items())  # noqa: E731
                        if st == s and study.is_method(n, section, name)]
        last = at(final)
        diffs = [r["fd_fmnist"] - base[r["seed"]] for r in last if r["seed"] in base]
        d = f"{mean_spread(diffs)[0]:+.1f}" + (f" (n={len(diffs)})" if diffs else "") if diffs else "—"
        sps = [r["train_seconds"] / r["step"] for r in last if r.get("train_seconds")]
        sps = f"{sum(sps) / len(sps):.2f}" if sps else "—"
        L.append(f"| {label} | " + " | ".join(fmt([r["fd_fmnist"] for r in at(s)]) for s in steps) +
                 f" | {d} | {fmt([r['class_acc'] for r in last], 1, 100)} | {sps} | "
                 f"{probe_cell(probes.get(f'{name}-s{probe_seed}'), final)} |")
    return L


def missing_line(study: Study, rows: dict, probes: dict, section: str, shown: set[str]) -> list[str]:
    """The shown methods' runs without their final evaluation or final probe, and the command that completes them."""
    runs = [r for r in study.runs.values() if r.section == section and r.method in shown]
    missing = [r.name for r in runs if (r.name, r.steps) not in rows]
    no_probe = [r.name for r in runs if r.probe_steps and probes.get(r.name, {}).get("step") != max(r.probe_steps)]
    if not missing and not no_probe:
        return []
    return ["", f"**Still missing:** runs {', '.join(missing) or 'none'}; probes {', '.join(no_probe) or 'none'}. "
            f"Resume with `python experiments/run.py --only {section} --jobs 2 --threads 1`."]


def family_section(study: Study, rows: dict, probes: dict) -> list[str]:
    """The self-alignment family (and its rivals) on the main comparison's model, data, steps and seeds."""
    sec = study.table["sections"]["family"]
    steps, final = sorted(sec["eval_steps"]), sec["steps"]
    shown = study.methods("family", rows, probes)
    L = ["", "## The self-alignment family and its rivals: DTS + AS, Self-Flow's teacher, REPA, Dispersive Loss", "",
         "Same model, data, optimiser, EMA, seeds and evaluation as the main comparison; each row changes the "
         "objective only (`sra train` flags in the commands below). DTS + AS is the authors' SiT-SRA_DTS_AS recipe: "
         "each image's 64 tokens split at random 16 / 48 (mask ratio 0.25), the two groups noised at independent "
         "times, each token's adaLN conditioned on its own time, attention only within a group; with SRA the EMA "
         "teacher sees the same groups at t_g − U(0, 0.2). The Self-Flow row gives that teacher the whole image at "
         "the lower of the two times instead. REPA aligns block 2 to the FD-FMNIST classifier's 8×8×64 conv features "
         "(the classifier is also the evaluation's feature extractor, so REPA's FD here is not an independent "
         "measurement: it is trained towards the metric's own features; the independent classifier's table below "
         "scores it fairly). Dispersive Loss (arXiv 2506.09027) needs no external model either: InfoNCE-L2 over the "
         "batch on the last block's flattened output, λ 0.25 and temperature 1 as its public code, no alignment. "
         "The cos-over-tokens row is SRA with the released code's cosine (over the token axis, ×0.5) instead of the "
         "per-token cosine the paper writes. Probe: linear-probe test accuracy (%) of "
         f"the final EMA's mean-pooled block-{sec['probe']['block']} tokens (null label) at t = "
         f"{', '.join(f'{t:g}' for t in study.probe_times)} ({study.table['probe']['train']} training / "
         f"{study.table['probe']['test']} test images, seed 0 runs only): the mechanism the follow-up paper argues "
         "from is that alignment makes the student's tokens more semantic at high noise.", ""]
    methods = [(m, label, "main") for m, label in study.methods("main", rows, probes)] + \
        [(m, label, "family") for m, label in shown]
    L += method_table(study, rows, probes, methods, ("plain", "main"), steps, final)
    L += ["", "FD-FMNIST and accuracy: mean ± half the range over the seeds that finished (n); Δ FD pairs each run "
          "with the plain run of the same seed. s/step: training only, on a shared 2-core machine (indicative)."]
    return L + missing_line(study, rows, probes, "family", {m for m, _ in shown})


def independent_section(study: Study, rows: dict, methods: list[dict], indep: dict) -> list[str]:
    """The final checkpoints scored by the independent classifier and, on the same samples, by the default one: the FD
    that REPA's rows were not trained towards."""
    clf = (study.table["eval"].get("independent") or [None])[0]
    have = [m for m in methods if any((r["run"], r["step"], clf) in indep for r in m["runs"])]
    if not clf or not have:
        return []
    irows = {(r["run"], r["step"]): r for (run, step, c), r in indep.items() if c == clf}
    cnn = {k: {"seed": r["seed"], "fd_fmnist": r.get("cnn_fd_fmnist", rows.get(k, {}).get("fd_fmnist")),
               "class_acc": r.get("cnn_class_acc", rows.get(k, {}).get("class_acc"))} for k, r in irows.items()}
    reruns = sorted(k[0] for k, r in cnn.items() if k in rows and r["fd_fmnist"] != rows[k]["fd_fmnist"])

    def delta(m, key, table, scale=1.0):
        d = [v * scale for v in per_seed_delta(study, table, m, key)]
        return (f"{mean_spread(d)[0]:+.1f}" + (f" ± {mean_spread(d)[1]:.1f}" if len(d) > 1 else "") +
                f" (n={len(d)})") if d else "—"

    L = ["", f"## An independent metric: the {clf} classifier", "",
         f"The final checkpoint of each run: the same {study.table['eval']['samples']} samples (same noise) scored by "
         f"a second Fashion-MNIST classifier (`sra eval --metric fmnist --classifier {clf}`: another architecture, "
         "strided convolutions, residual blocks, GELU and global average pooling, trained from another seed) and by "
         "the default cnn. No run is aligned to the second classifier's features, while REPA's rows are aligned to "
         "the cnn's. Its FD has its own scale (docs/EVALUATION.md): compare within its column. Δ pairs each run with "
         "its section's plain run of the same seed (± half the range of the per-seed differences).", ""]
    if reruns:
        L += [f"Runs retrained for this table ({', '.join(reruns)}): same seed, flags and data order, but floating "
              "point drifts apart from the first runs after about 150 steps (the logged losses agree to 7 digits up to "
              "step 100, then differ in the 5th), so these are new runs of the same seeds. Their cnn scores are in "
              "the table next to the second classifier's; how far they land from the first runs' values in the "
              "tables above is one more measure of the seed-level noise.", ""]
    L += [f"| method | FD-FMNIST (cnn) | FD ({clf}) | Δ FD cnn vs plain | Δ FD {clf} vs plain | accuracy cnn (%) | "
          f"accuracy {clf} (%) | Δ accuracy {clf} (points) |", "|---|---|---|---:|---:|---|---|---:|"]
    for m in have:
        keys = [(r["run"], r["step"]) for r in m["runs"] if (r["run"], r["step"]) in irows]
        L.append(f"| {m['label']} | {fmt([cnn[k]['fd_fmnist'] for k in keys])} | "
                 f"{fmt([irows[k]['fd_fmnist'] for k in keys])} | {delta(m, 'fd_fmnist', cnn)} | "
                 f"{delta(m, 'fd_fmnist', irows)} | {fmt([cnn[k]['class_acc'] for k in keys], 1, 100)} | "
                 f"{fmt([irows[k]['class_acc'] for k in keys], 1, 100)} | {delta(m, 'class_acc', irows, 100)} |")
    return L


def dit_section(study: Study, rows: dict, probes: dict) -> list[str]:
    """The family on DiT-T/4 (DDPM); nothing until one of its runs has a result."""
    sec = study.table["sections"]["dit"]
    shown = study.methods("dit", rows, probes)
    if not any(study.is_method(n, "dit") for n in [n for n, _ in rows] + list(probes)):
        return []
    L = ["", "## The family on DiT-T/4 (DDPM)", "",
         "The main setting's data, optimiser, EMA and evaluation with DiT-T/4 (`--model DiT-T/4`: DDPM, learned "
         "sigma, samples by DDIM with the same number of steps); SRA in the SiT main setting's form (blocks 2 → 4, "
         "cosine, λ 0.5). Δ FD pairs each run with DiT plain of the same seed.", ""]
    first = shown[0][0]
    L += method_table(study, rows, probes, [(m, label, "dit") for m, label in shown], (first, "dit"),
                      sorted(sec["eval_steps"]), sec["steps"])
    return L + missing_line(study, rows, probes, "dit", {m for m, _ in shown})


def deep_section(study: Study, rows: dict, probes_all: list[dict]) -> list[str]:
    """The 12-block setting; nothing until one of its runs is evaluated or measured."""
    sec = study.table["sections"]["deep"]
    flags = shlex.split(sec["flags"])
    depth, bs, bt = (int(last_flag(flags, f)) for f in ("--depth", "--block-out-s", "--block-out-t"))
    sims = [r for r in read_jsonl(study.file("_similarity.jsonl"))]
    if not any(study.is_method(n, "deep") for n, _ in rows) and not sims:
        return []
    steps, final = sorted(sec["eval_steps"]), sec["steps"]
    probes = {(r["run"], r["step"]): r for r in probes_all}
    latest = latest_probes(probes_all)
    shown = study.methods("deep", rows, latest)
    seeds = sorted({study.run(n).seed for n, _ in rows if study.is_method(n, "deep")})
    plain = shown[0][0]
    one = len(seeds) <= 1
    L = ["", f"## Deeper: {depth} blocks, SRA {bs} → {bt} (seed{'' if one else 's'} "
         f"{', '.join(map(str, seeds or sec['seeds'][:1]))})", "",
         f"The main setting's width, data, optimiser, EMA and evaluation with {depth} blocks instead of 6 "
         f"(`--depth {depth}`), SRA from block {bs} to block {bt} (the paper's layers for 12-block SiT-S/B). Probe: "
         f"as in the family section, of block {bs}'s tokens. "
         + ("One seed: the 6-block runs' seed-to-seed spread (±10 FD at 1200 steps) is the yardstick for any "
            "difference." if one else "Mean ± half the range over the seeds that finished (n); Δ FD pairs each run "
            "with the plain run of the same seed."), "",
         "| run | " + " | ".join(f"FD-FMNIST @ {s}" for s in steps) + f" | Δ FD vs plain @ {final} | "
         f"accuracy @ {final} (%) | s/step | probe t={'/'.join(f'{t:g}' for t in study.probe_times)} (%) |",
         "|---|" + "---|" * len(steps) + "---:|---:|---:|---|"]

    def cell(values: list[float], scale: float = 1.0, sign: str = "") -> str:
        if not values:
            return "—"
        if len(values) == 1:
            return f"{values[0] * scale:{sign}.1f}"
        return f"{mean_spread(values)[0] * scale:{sign}.1f} (n={len(values)})" if sign else fmt(values, 1, scale)

    base = {r["seed"]: r["fd_fmnist"] for (n, s), r in rows.items() if s == final and study.is_method(n, "deep", plain)}
    probe_seed = min(sec.get("probe", {}).get("seeds", [0]), default=0)
    for name, label in shown:
        at = lambda s: [r for (n, st), r in sorted(rows.items())  # noqa: E731
                        if st == s and study.is_method(n, "deep", name)]
        last = at(final)
        d = cell([r["fd_fmnist"] - base[r["seed"]] for r in last if r["seed"] in base], sign="+") \
            if name != plain else "—"
        sps = [r["train_seconds"] / r["step"] for r in last if r.get("train_seconds")]
        L.append(f"| {label} | " + " | ".join(cell([r["fd_fmnist"] for r in at(s)]) for s in steps) +
                 f" | {d} | {cell([r['class_acc'] for r in last], 100)} | "
                 f"{f'{sum(sps) / len(sps):.2f}' if sps else '—'} | "
                 f"{probe_cell(latest.get(f'{name}-s{probe_seed}'), final)} |")
    if sims:
        L += ["", "Is the teacher block's token a near-linear map of the student block's? "
              "(`benchmarks/fmnist_token_similarity.py`'s measures on the EMA at the step shown: 512 test images, both "
              "blocks at the same t, no head; R² of a least-squares linear map fitted on half the images, on the other "
              "half. The 6-block plain-s0 run had R² 0.95–0.97 for blocks 2 → 4.)", "",
              "| run | step | blocks | t | cos | cos, centred | R² linear |", "|---|---:|---|---:|---:|---:|---:|"]
        last = {}  # the latest measured step of each (run, blocks, t)
        for r in sorted(sims, key=lambda r: r["step"]):
            last[(r["run"], tuple(r["blocks"]), r["t"])] = r
        for (name, blocks, t), r in sorted(last.items()):
            L.append(f"| {name} | {r['step']} | {blocks[0]} → {blocks[1]} | {t:g} | {r['cos']:.3f} | "
                     f"{r['cos_centred']:.3f} | {r['r2_linear']:.3f} |")
    runs = [r for r in study.runs.values() if r.section == "deep" and r.method in {m for m, _ in shown}]
    missing = [r.name for r in runs if (r.name, final) not in rows or (r.probe_steps and (r.name, final) not in probes)]
    if missing:
        L += ["", f"**Still missing:** {', '.join(missing)}. Resume with `python experiments/run.py --only deep "
              "--jobs 2 --threads 1`."]
    return L


def losses_section(study: Study, losses: dict, rows: dict) -> list[str]:
    """Denoising loss of plain vs SRA (same seeds: same data, noise and t) and the size of the alignment term."""
    main = sorted(n for n in losses if study.is_method(n, "main"))
    steps = sorted({s for (n, s) in rows if study.is_method(n, "main")})
    if not main or not steps:
        return []
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for n in main:
        pts = sorted((int(s), c) for s, c in losses[n].items())
        style = dict(color="tab:blue" if study.run(n).method == "plain" else "tab:orange", alpha=0.7, lw=1, label=n,
                     ls=("-", "--", ":", "-.")[study.run(n).seed % 4])
        axes[0].plot([s for s, _ in pts], [c["denoise"] for _, c in pts], **style)
        if study.run(n).method == "sra":
            axes[1].plot([s for s, _ in pts], [c["align"] for _, c in pts], **style)
    axes[0].set(xlabel="training step", ylabel="denoising loss (per logging interval)", yscale="log",
                title="flow-matching loss")
    axes[1].set(xlabel="training step", ylabel="1 − cos (student head vs teacher)", yscale="log",
                title="SRA alignment term (before λ)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    out = study.docs / "fmnist_losses.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    w = 4 * study.log_every
    L = ["", "## Training losses", "",
         f"Mean of the logged values over the {w} steps up to each step, mean over seeds (from the run folders' "
         f"metrics.jsonl, kept in `{os.path.relpath(study.file('_losses.json'), ROOT)}`). "
         "Same seed means the same images, noise and t in both methods, so the denoising losses compare directly.", "",
         "| step | denoising loss plain | denoising loss SRA | alignment term SRA (1 − cos) | "
         "λ · alignment / total SRA loss |",
         "|---:|---:|---:|---:|---:|"]

    def avg(method: str, key: str, step: int) -> float | None:
        v = [window_mean(losses[n], key, step, w) for n in main if study.run(n).method == method]
        v = [x for x in v if x is not None]
        return sum(v) / len(v) if v else None

    common = shlex.split(study.table["common"])
    weight = float(common[common.index("--sra-weight") + 1])
    for s in steps:
        dp, ds, al = avg("plain", "denoise", s), avg("sra", "denoise", s), avg("sra", "align", s)
        share = f"{100 * weight * al / (ds + weight * al):.1f} %" if ds is not None and al is not None else "—"
        L.append(f"| {s} | " + " | ".join("—" if x is None else f"{x:.4f}" for x in (dp, ds, al)) + f" | {share} |")
    L += ["", f"![training losses]({os.path.relpath(out, study.docs)})"]
    return L


def ema_section(study: Study, rows: dict, old: dict) -> list[str]:
    """The same main runs with the earlier EMA (the tiny preset's default warm-up cap), from an older results file."""
    steps = sorted({s for (n, s) in rows if study.is_method(n, "main")}
                   & {s for (n, s), r in old.items() if r.get("group") == "main"})
    if not steps:
        return []
    H = study.half_life
    L = ["", "## What the EMA does at this scale", "",
         "The first version of this study (results kept in "
         f"`{os.path.relpath(study.file('_v1_warmup_ema.jsonl'), ROOT)}`) used the tiny preset's default EMA, decay "
         "min(0.999, (1+n)/(10+n)) at step n, whose cap acts at every step of these runs: a half-life of about "
         "0.077·n steps that grows with the run (≈ 23 steps at n = 300, ≈ 46 at n = 600, ≈ 93 at n = 1200). Plain "
         "training never reads its EMA, but those runs also predate the switch to fused AdamW, which rounds "
         "differently: with the same seeds (same data, noise and t) the logged losses agree to 7 digits at step 50 "
         "and then drift apart, so the online weights are not the same in the two versions. Read a difference "
         "between the plain columns as the EMA's effect only where it is well beyond the seed spread. For SRA the "
         "EMA is also the teacher, so its training changes too.", "",
         f"| step | plain, warm-up EMA | plain, half-life {H:g} kimg | SRA, warm-up EMA | "
         f"SRA, half-life {H:g} kimg |", "|---:|---|---|---|---|"]
    for s in steps:
        cells = [fmt(by_method(study, r, m, s, "fd_fmnist")) for m in ("plain", "sra") for r in (old, rows)]
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
        ev = [r["eval_seconds"] for r in rs if r.get("eval_seconds") is not None]
        tm = f"{last['train_seconds'] / 60:.1f}" if last.get("train_seconds") else "—"
        L.append(f"| {name} | {last['step']} | {tm} | {s_per_step(last)} | "
                 f"{f'{sum(ev) / len(ev):.0f}' if ev else '—'} |")
    return L


def conclusion(study: Study, rows: dict, old: dict) -> list[str]:
    main_steps = sorted({s for (n, s) in rows if study.is_method(n, "main")})
    if not main_steps:
        return ["No main-comparison results yet."]
    bm = lambda r, m, s, k: by_method(study, r, m, s, k)  # noqa: E731
    lines = []
    final = main_steps[-1]
    p, q = bm(rows, "plain", final, "fd_fmnist"), bm(rows, "sra", final, "fd_fmnist")
    pa, qa = bm(rows, "plain", final, "class_acc"), bm(rows, "sra", final, "class_acc")
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
                     f"{mean_spread(p)[0]:.1f} (plain) vs {mean_spread(q)[0]:.1f} (SRA), difference {d:+.1f}; "
                     f"{spread}. Classifier accuracy on samples: {100 * mean_spread(pa)[0]:.1f} % vs "
                     f"{100 * mean_spread(qa)[0]:.1f} %.")
        per_step = []
        for s in main_steps:
            a, b = bm(rows, "plain", s, "fd_fmnist"), bm(rows, "sra", s, "fd_fmnist")
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
    p0 = bm(rows, "plain", first, "fd_fmnist")
    if p0 and p and first != final and mean_spread(p)[0] < 0.8 * mean_spread(p0)[0]:
        lines.append(f"- **What does help at this scale: training longer.** Plain FD-FMNIST falls from "
                     f"{mean_spread(p0)[0]:.1f} at step {first} to {mean_spread(p)[0]:.1f} at step {final} "
                     f"(×{mean_spread(p0)[0] / max(mean_spread(p)[0], 1e-9):.1f}); compare with the SRA − plain "
                     "differences in the table.")
    ema, beyond = [], []
    for s in main_steps if old else []:
        a, b = bm(old, "plain", s, "fd_fmnist"), bm(rows, "plain", s, "fd_fmnist")
        if len(a) > 1 and len(b) > 1:
            dd, nn = mean_spread(b)[0] - mean_spread(a)[0], seed_spread(a, b)
            ema.append(f"step {s}: {dd:+.1f} vs seed spread {nn:.1f}")
            if abs(dd) > nn:
                beyond.append(f"{s} ({'half-life' if dd < 0 else 'warm-up'} EMA better)")
    if ema:
        lines.append(("- **The EMA mattered more than SRA here.** " if beyond else "- EMA: ")
                     + f"Plain FD-FMNIST with the {study.half_life:g} kimg half-life minus plain with the "
                     "earlier warm-up EMA (see 'What the EMA does'): " + "; ".join(ema) + ". Beyond the seed spread "
                     + (f"at step{'s' * (len(beyond) > 1)} {', '.join(beyond)}" if beyond else "at no step") + ".")
    tp, tq = bm(rows, "plain", final, "train_seconds"), bm(rows, "sra", final, "train_seconds")
    if tp and tq and all(tp + tq):
        ratio = mean_spread(tq)[0] / mean_spread(tp)[0]
        lines.append(f"- Cost: an SRA step took {ratio:.2f}× a plain step in these runs (wall-clock, "
                     "2 runs at a time on 2 cores); at equal compute plain would have trained about "
                     f"{final * ratio:.0f} steps, which would favour plain further while FD is still falling this "
                     "fast with steps.")
    ref_step = study.ablation_steps
    abl = {n: r for (n, s), r in rows.items() if study.is_method(n, "ablation") and s == ref_step}
    ref, plain = rows.get(("sra-s0", ref_step)), rows.get(("plain-s0", ref_step))
    if abl and ref:
        noise = seed_spread(*(bm(rows, m, ref_step, "fd_fmnist") for m in ("plain", "sra")))
        best_name, best = min(abl.items(), key=lambda kv: kv[1]["fd_fmnist"])
        lines.append(f"- **Ablations at step {ref_step}** (one seed each): SRA reference {ref['fd_fmnist']:.1f}; "
                     + (f"the best of {len(abl)} ablation rows" if len(abl) > 1 else "the one ablation row run")
                     + f" is '{study.run(best_name).label}' at {best['fd_fmnist']:.1f}. "
                     + (f"Two seeds of the same setting differ by up to {noise:.1f} at this step, so ablation "
                        f"differences smaller than that are not evidence." if noise is not None else ""))
        if noise is not None and plain:
            beyond = [study.run(n).label for n, r in abl.items() if abs(r["fd_fmnist"] - plain["fd_fmnist"]) > noise]
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


def methods_conclusion(study: Study, rows: dict, compared: list[dict], indep: dict) -> list[str]:
    """One line per method of the family, DiT and deep sections: its per-seed differences from its section's plain
    run of the same seed, and whether they exceed what two seeds of plain differ by."""
    clf = (study.table["eval"].get("independent") or [None])[0]
    irows = {(r["run"], r["step"]): r for (run, step, c), r in indep.items() if c == clf}
    lines = []
    for m in compared:
        if (m["name"], m["section"]) == m["baseline"] or m["section"] == "main":
            continue
        dfd, dacc = per_seed_delta(study, rows, m, "fd_fmnist"), per_seed_delta(study, rows, m, "class_acc")
        if not dfd:
            continue
        spans = {k: by_method(study, rows, m["baseline"][0], m["step"], k, m["baseline"][1])
                 for k in ("fd_fmnist", "class_acc")}
        spans = {k: max(v) - min(v) if len(v) > 1 else None for k, v in spans.items()}
        txt = (f"- **{m['label']}** (n = {len(dfd)}, step {m['step']}): Δ FD-FMNIST per seed "
               f"{', '.join(f'{d:+.1f}' for d in dfd)} ({verdict(dfd, spans['fd_fmnist'], 1)}); Δ accuracy "
               f"{', '.join(f'{100 * d:+.1f}' for d in dacc)} points ({verdict(dacc, spans['class_acc'], 100)}).")
        if m["versus"]:
            other = {**m, "baseline": m["versus"]}
            dv, dva = per_seed_delta(study, rows, other, "fd_fmnist"), per_seed_delta(study, rows, other, "class_acc")
            label = next(lb for n, lb in study.methods(m["versus"][1], rows, {}) if n == m["versus"][0])
            txt += (f" Against {label} of the same seed: Δ FD {', '.join(f'{d:+.1f}' for d in dv)}, Δ accuracy "
                    f"{', '.join(f'{100 * d:+.1f}' for d in dva)} points.")
        di = per_seed_delta(study, irows, m, "fd_fmnist") if irows else []
        if di:
            b = by_method(study, irows, m["baseline"][0], m["step"], "fd_fmnist", m["baseline"][1])
            txt += (f" Scored by the {clf} classifier: Δ FD {', '.join(f'{d:+.1f}' for d in di)} "
                    f"({verdict(di, max(b) - min(b) if len(b) > 1 else None, 1)}).")
        lines.append(txt)
    if lines:
        lines.insert(0, "- **The family, method by method** (each against its section's plain run of the same seed; "
                        "FD lower is better):")
        lines[1:] = ["  " + x for x in lines[1:]]
    return lines


def scale_note(study: Study, rows: dict) -> list[str]:
    """What this study's scale can and cannot tell, with its own seed spread."""
    p = by_method(study, rows, "plain", study.steps, "fd_fmnist")
    pa = by_method(study, rows, "plain", study.steps, "class_acc")
    if len(p) < 2:
        return []
    return ["", "**What this scale can and cannot tell.** A 1.9 M-parameter model, 1200 steps of 64 images, "
            f"{study.table['eval']['samples']} samples per score and three seeds: plain's own seeds span "
            f"{max(p) - min(p):.1f} in FD-FMNIST and {100 * (max(pa) - min(pa)):.1f} points in accuracy at step "
            f"{study.steps}. A method whose per-seed differences keep one sign and exceed that span changes "
            "training here; anything smaller is not evidence either way. The study can show whether a mechanism "
            "works at all on a small model (the probes, the block-pair linearity) and how each term costs per "
            "step. It cannot show the paper's claims: those are FID gains at 400K steps on ImageNet latents with "
            "models 70–350× larger. FD-FMNIST is a domain classifier's feature distance, and with one classifier "
            "it is exposed to methods trained towards that classifier (REPA here), which is why the second "
            "classifier scores the final checkpoints."]


def planned_section(study: Study, rows: dict, probes: dict) -> list[str]:
    """Methods the table plans and the report does not show yet (none of their runs has a result)."""
    L = []
    for section, sec in study.table["sections"].items():
        shown = {m for m, _ in study.methods(section, rows, probes)}
        for m in sec["methods"]:
            if m["name"] not in shown:
                flags = " ".join(f for f in (sec.get("flags"), m.get("flags")) if f) or "the common flags only"
                L.append(f"- {section}: {m['label']} (`{m['name']}`, seeds "
                         f"{', '.join(map(str, sec['seeds']))}): `{flags}`")
    if not L:
        return []
    return ["", "## Planned, not run yet", "",
            "In the run table (`experiments/fmnist_study.yaml`) with the same protocol, and left out of the tables "
            "above until one of their runs has a result. `python experiments/run.py --only SECTION` runs them (a row "
            "whose flags `sra train` does not list yet is skipped with one line), `python experiments/report.py` "
            "adds them here.", ""] + L


def commands_section(study: Study) -> list[str]:
    example = study.runs["sra-s0"]
    return ["", "## Commands", "",
            "Every run is a row of `experiments/fmnist_study.yaml` (method flags, seeds, steps, evaluated and probed "
            "steps); `experiments/run.py` issues only `sra` commands for it, each resumable, and skips what its run "
            "folder already holds. The notes above name `benchmarks/fmnist_study.py`, the script the stored runs "
            "were made with; it built the same training configs in-process and scored them with the same "
            "functions and arguments as `sra eval` and `sra probe` below.", "",
            "```",
            "# everything (resumable: re-running continues the runs and skips finished evaluations), then this report",
            "python experiments/run.py --jobs 2 --threads 1 && python experiments/report.py",
            "# the exact commands still to run, without running them",
            "python experiments/run.py --dry-run",
            "# parts of it (each resumable; the exact sequence behind this report is in the notes above)",
            "python experiments/run.py --only main                    # 3 seeds x {plain, SRA}, 1200 steps",
            "python experiments/run.py --only main --runs sra-s2      # one main run",
            "python experiments/run.py --only ablation                # the ten one-seed rows, 600 steps",
            "python experiments/run.py --runs sra-no-head-s0          # one ablation row",
            "python experiments/run.py --only family --jobs 2         # the self-alignment family rows + probes",
            "python experiments/run.py --only deep --jobs 2           # the 12-block runs + probes + similarity",
            "python experiments/run.py --only dit --jobs 2            # DiT-T/4 rows",
            "python experiments/report.py                             # collect from runs/study, rewrite this file",
            f"# what the runner issues for one run, e.g. {example.name} (train to each evaluated step in turn):",
            "OMP_NUM_THREADS=1 " + shlex.join(["sra", "train", *example.flags, "--max-train-steps", "300", "--seed",
                                               "0", "--output-dir", "runs/study", "--exp-name", example.name]),
            f"sra eval --metric fmnist runs/study/{example.name}/checkpoints/0000300.pt --num-samples "
            f"{study.table['eval']['samples']} --sample-steps {study.table['eval']['sample_steps']} --seed "
            f"{study.table['eval']['seed']} --output runs/study/{example.name}/eval_fmnist_step300.json",
            f"sra probe runs/study/{example.name}/checkpoints/0000600.pt --blocks 2 --times "
            f"{','.join(f'{t:g}' for t in study.probe_times)} --max-train {study.table['probe']['train']} "
            f"--max-test {study.table['probe']['test']} --seed {study.table['probe']['seed']} "
            f"--output-dir runs/study/{example.name}/probe_step600",
            "```", ""]


def render(study: Study) -> Path:
    """docs/RESULTS.md, the FD plot, the loss plot and (when the run folders hold the grids) the sample grids."""
    rows = latest_rows(study.file(".jsonl"))
    probes_all = read_jsonl(study.file("_probe.jsonl"))
    probes = latest_probes(probes_all)
    losses_path = study.file("_losses.json")
    losses = json.loads(losses_path.read_text()) if losses_path.exists() else {}
    old = latest_rows(study.file("_v1_warmup_ema.jsonl"))
    docs = study.docs
    docs.mkdir(parents=True, exist_ok=True)
    ev = study.table["eval"]
    plot = docs / "fmnist_fd_vs_steps.png"
    if any(study.is_method(n, "main") for n, _ in rows):
        plot_fd(study, rows, plot, ev["samples"])
    grids = docs / "fmnist_samples_plain_vs_sra.png"
    compose_grids(study, study.steps, grids)
    indep = {(r["run"], int(r["step"]), r["classifier"]): r for r in read_jsonl(study.file("_independent.jsonl"))}
    compared = compared_methods(study, rows, probes)
    summary = docs / "fmnist_study_summary.png"
    if compared:
        plot_summary(study, compared, indep, summary)
    H = study.half_life
    L = ["# Does SRA help? A small controlled study on Fashion-MNIST (CPU)", "",
         f"*Generated by `python experiments/report.py` from `{os.path.relpath(study.file('.jsonl'), docs)}` "
         f"({len(rows)} evaluations) and the run table `{os.path.relpath(study.table_path, docs)}`; do not edit by "
         "hand.*", "",
         "## Setup", "",
         f"- Model and data: the default `sra train` config: {study.model} (depth 6, width 128, 4 heads, patch 4, "
         "1.9 M parameters) on 32×32×1 Fashion-MNIST (28×28 padded), batch 64, AdamW lr 1e-3 with a 200-step linear "
         "warm-up then constant, gradient clipping 1.0, uniform t, linear path, class dropout 0.1.",
         f"- EMA (sampling model and SRA teacher): set by its half-life, {H:g} kimg = {H * 1000 / 64:.0f} steps of 64 "
         f"images (decay {0.5 ** (64 / (H * 1000)):.4f} per step), constant, no warm-up, so the teacher averages the "
         f"student over its last ~{H * 1000 / 64:.0f} steps at every point of the run: it trails the student (which "
         "is what SRA needs) without lagging a whole phase of a short run behind. The random initial weights keep "
         f"{100 * 0.5 ** (300 * 64 / (H * 1000)):.1f} % of the EMA at step 300, the first evaluated checkpoint. "
         "(For scale: the paper's decay 0.9999 at batch 256 is a half-life of about 1.7 % of a 400K-step run; here "
         f"it is {100 * H * 1000 / 64 / study.steps:.1f} % of the {study.steps}-step main runs.)",
         "- SRA (main setting, the tiny preset's default): student block 2 → teacher block 4 (teacher runs 4 of 6 "
         "blocks, under bf16 autocast where the CPU has native bf16 as `sra train` resolves it by default: this "
         "round's runs record `teacher_bf16: true` in their config.json, earlier rows did not record it), per-token "
         "cosine distance, λ = 0.5, teacher time t' = t − k with k ~ U(0, 0.2), projection "
         "head. Plain = the same config with λ = 0. Same seed ⇒ same initialisation, data order, noise and t draws.",
         f"- Evaluation: each checkpoint's EMA generates {ev['samples']} class-balanced samples (label i mod 10) "
         f"with the Euler ODE, {ev['sample_steps']} steps, no guidance, noise seed {ev['seed']} (identical for every "
         "row); FD-FMNIST is the Fréchet distance in the cached Fashion-MNIST classifier's 128-d features against the "
         "10 000 test images, and accuracy is the share of samples that classifier labels as their conditioning class.",
         "- Compute: 2 CPU cores; 2 runs at a time, 1 torch thread each. Wall-clock "
         "numbers below depend on what else ran on the machine (see the notes) and are only indicative.", ""]
    if compared:
        L += ["## At a glance", "",
              "Every method at its section's last step: FD-FMNIST, the independent classifier's FD (where scored; "
              "for retrained runs, those of the independent metric's section), "
              "sample accuracy (one dot per seed, the bar is the mean), and its training step's time over plain's "
              "on the same model, timed side by side by `sra bench` (the commands are in "
              f"`{os.path.relpath(study.file('_cost.jsonl'), docs)}`; one thread on the shared 2-core machine, "
              "5 rounds: a direction and a rough size). The tables below give the numbers, the per-seed differences "
              "and the probes.", "",
              f"![every method at a glance]({os.path.relpath(summary, docs)})", ""]
    L += main_section(study, rows, plot)
    L += ablation_section(study, rows, losses)
    L += family_section(study, rows, probes)
    L += independent_section(study, rows, compared, indep)
    L += deep_section(study, rows, probes_all)
    L += dit_section(study, rows, probes)
    L += losses_section(study, losses, rows)
    L += ema_section(study, rows, old)
    L += wallclock_section(rows)
    if grids.exists():
        L += ["", "## Samples", "", "Final EMA sample grids of seed 0 (rows: classes 0–9, i.e. T-shirt, trouser, "
              "pullover, dress, coat, sandal, shirt, sneaker, bag, ankle boot; same noise for both runs):", "",
              f"![plain vs SRA samples]({os.path.relpath(grids, docs)})"]
    notes = study.file("_notes.md")
    if notes.exists():
        L += ["", notes.read_text().strip()]
    L += ["", "## Conclusion (computed from the numbers above)", ""] + conclusion(study, rows, old)
    L += methods_conclusion(study, rows, compared, indep) + scale_note(study, rows)
    L += planned_section(study, rows, probes)
    L += commands_section(study)
    out = docs / "RESULTS.md"
    out.write_text("\n".join(L))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--table", type=Path, default=TABLE, help="the run table (YAML)")
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "study", help="parent of the run folders")
    ap.add_argument("--results-dir", type=Path, default=RESULTS,
                    help=f"where the results files ({STEM}*.jsonl) are kept")
    ap.add_argument("--docs-dir", type=Path, default=ROOT / "docs", help="where RESULTS.md and its figures go")
    ap.add_argument("--no-collect", action="store_true", help="render from the stored results only")
    opts = ap.parse_args(argv)
    study = Study(opts.table, opts.results_dir, opts.docs_dir, opts.runs_dir)
    if not opts.no_collect and study.runs_dir.is_dir():
        print(f"collected {collect(study)} new rows from {study.runs_dir}")
    print(f"wrote {render(study)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
