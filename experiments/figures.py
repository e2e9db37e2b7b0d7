"""The report's figures: FD-FMNIST against steps (main comparison), every method at a glance, sample grids."""
from __future__ import annotations

from pathlib import Path

from study import Study, by_method, mean_spread


def plot_fd(study: Study, rows: dict, out: Path, num_samples: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for method, color in (("plain", "tab:blue"), ("sra", "tab:orange")):
        runs = sorted({n for (n, _) in rows if study.is_method(n, "main", method)})
        for ax, key, scale in ((axes[0], "fd_fmnist", 1.0), (axes[1], "class_acc", 100.0)):
            for n in runs:
                pts = sorted((s, r[key] * scale) for (m, s), r in rows.items() if m == n)
                ax.plot(*zip(*pts), color=color, alpha=0.45, lw=1, ls="--", marker=".")
            steps = sorted({s for (n, s) in rows if n in runs})
            means = [(s, mean_spread([v * scale for v in by_method(study, rows, method, s, key)])[0]) for s in steps]
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


def plot_summary(study: Study, methods: list[dict], indep: dict, out: Path) -> None:
    """One figure: per method (rows), FD-FMNIST, the independent classifier's FD, sample accuracy (dots: seeds, bar:
    mean) and the training cost per step; a dashed line marks each section's plain mean."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    clf = (study.table["eval"].get("independent") or [None])[0]

    def rows_of(m):
        return m["runs"]

    panels = [("fd_fmnist", "FD-FMNIST (cnn; lower is better)", 1.0, rows_of)]
    if clf and indep:
        panels.append(("fd_fmnist", f"FD-FMNIST ({clf} classifier)", 1.0,
                       lambda m: [indep[(r["run"], r["step"], clf)] for r in m["runs"]
                                  if (r["run"], r["step"], clf) in indep]))
    panels.append(("class_acc", "accuracy on samples (%, cnn)", 100.0, rows_of))
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(3.3 * (len(panels) + 1) + 2.5, 0.42 * len(methods) + 1.6),
                             sharey=True, gridspec_kw={"width_ratios": [3] * len(panels) + [2]})
    colors = {"main": "tab:blue", "family": "tab:orange", "deep": "tab:green", "dit": "tab:purple"}
    ys = list(range(len(methods)))[::-1]
    for ax, (key, title, scale, pick) in zip(axes, panels):
        for y, m in zip(ys, methods):
            vals = [r[key] * scale for r in pick(m)]
            if not vals:
                continue
            ax.scatter(vals, [y] * len(vals), s=18, color=colors[m["section"]], alpha=0.7, zorder=3)
            ax.plot([sum(vals) / len(vals)] * 2, [y - 0.3, y + 0.3], color="black", lw=2, zorder=4)
        for m in methods:  # each section's plain mean, across that section's rows
            if (m["name"], m["section"]) == m["baseline"]:
                vals = [r[key] * scale for r in pick(m)]
                ins = [y for y, o in zip(ys, methods) if o["baseline"] == m["baseline"]]
                if vals:
                    ax.vlines(sum(vals) / len(vals), min(ins) - 0.4, max(ins) + 0.4, colors="gray", linestyles="--",
                              lw=1)
        ax.set_title(title, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    cost = axes[-1]
    for y, m in zip(ys, methods):
        if m["cost"] is not None:
            cost.barh(y, m["cost"], color=colors[m["section"]], alpha=0.6)
            cost.text(m["cost"], y, f" {m['cost']:.2f}", va="center", fontsize=7)
    cost.axvline(1.0, color="gray", ls="--", lw=1)
    cost.set_xlim(0, 1.2 * max([m["cost"] for m in methods if m["cost"] is not None] + [1.0]))  # room for the labels
    cost.set_title("step time ÷ plain (sra bench, paired)", fontsize=9)
    cost.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(ys)
    axes[0].set_yticklabels([f"{m['name']} (n={len(m['runs'])})" for m in methods], fontsize=8)
    fig.suptitle(f"Fashion-MNIST, final step of each section; dots: seeds, bar: mean, dashed: the section's plain "
                 f"mean; colours: {', '.join(k for k in colors if any(m['section'] == k for m in methods))}",
                 fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def compose_grids(study: Study, step: int, out: Path) -> bool:
    """Final sample grids of plain and SRA seed 0 side by side (same noise, rows = classes 0..9), when the run
    folders hold them; otherwise the stored figure stays."""
    from PIL import Image, ImageDraw, ImageFont

    files = [study.runs_dir / n / "samples" / f"{step:07d}.png" for n in ("plain-s0", "sra-s0")]
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
