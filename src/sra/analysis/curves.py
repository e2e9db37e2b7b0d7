"""Training curves from run folders' metrics.jsonl: loss terms and FID/FD against steps and wall-clock hours, several
runs overlaid (`sra plot runs/plain runs/sra`), so that "SRA vs plain" is one picture."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..runfolder import atomic_write

# Drawn when present, in this order: the loss terms of train rows, then the evaluation rows' metrics.
LOSS_KEYS = ("loss", "denoise", "vb", "align")
EVAL_KEYS = ("fid", "fd_fmnist", "inception_score", "class_acc")


def number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_metrics(run: str | Path, skipped: list[int] | None = None) -> list[dict]:
    """The rows of RUN/metrics.jsonl (or of the given .jsonl file), in file order; a row with a step already seen
    replaces the earlier one (an interrupted session's rows after its last checkpoint are trained again). A malformed
    row (not JSON, as a torn last line; not an object; a step, wall time or metric that is not a number) is left out
    and counted in `skipped` (a one-element list), as the training loop's own reader does."""
    path = Path(run)
    path = path / "metrics.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (a run folder holds metrics.jsonl)")
    rows: dict[tuple, dict] = {}
    bad = 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:  # JSONDecodeError; also an overflowing number
            row = None
        if not (isinstance(row, dict) and number(row.get("step")) and number(row.get("wall_time", 0))
                and all(number(row[k]) for k in LOSS_KEYS + EVAL_KEYS if k in row)):
            bad += 1
            continue
        kind = "eval" if any(k in row for k in EVAL_KEYS) and not any(k in row for k in LOSS_KEYS) else "train"
        rows[(row.get("step"), kind)] = row
    if skipped is not None:
        skipped[0] += bad
    return sorted(rows.values(), key=lambda r: r.get("step", 0))


def plot_runs(runs: list[str | Path], output: str | Path, labels: list[str] | None = None) -> Path:
    """One column per metric present in any run; top row against optimizer steps, bottom row against wall-clock hours
    since each run's first row (rows written before timestamps existed are left out of the bottom row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = []
    for r in runs:
        skipped = [0]
        data.append(read_metrics(r, skipped))
        if skipped[0]:
            print(f"warning: skipped {skipped[0]} malformed rows in {r}", file=sys.stderr)
    labels = labels or [Path(r).name or str(r) for r in runs]
    keys = [k for k in LOSS_KEYS + EVAL_KEYS if any(k in row for rows in data for row in rows)]
    if not keys:
        raise ValueError("no loss or evaluation metrics in " + ", ".join(map(str, runs)))
    has_time = any("wall_time" in row for rows in data for row in rows)
    nrows = 2 if has_time else 1
    fig, axes = plt.subplots(nrows, len(keys), figsize=(4 * len(keys), 3.2 * nrows), squeeze=False)
    for i, (rows, label) in enumerate(zip(data, labels)):
        t0 = min((r["wall_time"] for r in rows if "wall_time" in r), default=None)
        for j, key in enumerate(keys):
            pts = [r for r in rows if key in r and "step" in r]
            if not pts:
                continue
            # evaluations are sparse: markers; so is a curve of one point, which a line alone would not draw at all.
            # Colour by run, not by each panel's cycle (a curve only a later run logs, align or vb, took the first's).
            def style(n: int) -> dict:
                return dict(marker="o" if key in EVAL_KEYS or n == 1 else None, markersize=3, label=label,
                            color=f"C{i}")

            axes[0][j].plot([r["step"] for r in pts], [r[key] for r in pts], **style(len(pts)))
            timed = [r for r in pts if "wall_time" in r]
            if has_time and timed:
                axes[1][j].plot([(r["wall_time"] - t0) / 3600 for r in timed], [r[key] for r in timed],
                                **style(len(timed)))
    for j, key in enumerate(keys):
        axes[0][j].set_title(key)
        axes[0][j].set_xlabel("step")
        if has_time:
            axes[1][j].set_xlabel("wall-clock hours")
        if key in ("loss", "denoise", "align", "vb"):
            for i in range(nrows):
                axes[i][j].set_yscale("log")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(output, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    finally:
        plt.close(fig)
    return output
