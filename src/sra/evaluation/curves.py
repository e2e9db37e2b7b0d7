"""Training curves from run folders' metrics.jsonl: loss terms and FID/FD against steps and wall-clock hours, several
runs overlaid (`sra plot runs/plain runs/sra`), so that "SRA vs plain" is one picture."""
from __future__ import annotations

import json
from pathlib import Path

# Drawn when present, in this order: the loss terms of train rows, then the evaluation rows' metrics.
LOSS_KEYS = ("loss", "denoise", "vb", "align")
EVAL_KEYS = ("fid", "fd_fmnist", "inception_score", "class_acc")


def read_metrics(run: str | Path) -> list[dict]:
    """The rows of RUN/metrics.jsonl (or of the given .jsonl file), in file order; a row with a step already seen
    replaces the earlier one (an interrupted session's rows after its last checkpoint are trained again)."""
    path = Path(run)
    path = path / "metrics.jsonl" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (a run folder holds metrics.jsonl)")
    rows: dict[tuple, dict] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{path} line {n} is not JSON") from None
        kind = "eval" if any(k in row for k in EVAL_KEYS) and not any(k in row for k in LOSS_KEYS) else "train"
        rows[(row.get("step"), kind)] = row
    return sorted(rows.values(), key=lambda r: r.get("step", 0))


def plot_runs(runs: list[str | Path], output: str | Path, labels: list[str] | None = None) -> Path:
    """One column per metric present in any run; top row against optimizer steps, bottom row against wall-clock hours
    since each run's first row (rows written before timestamps existed are left out of the bottom row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = [read_metrics(r) for r in runs]
    labels = labels or [Path(r).name or str(r) for r in runs]
    keys = [k for k in LOSS_KEYS + EVAL_KEYS if any(k in row for rows in data for row in rows)]
    if not keys:
        raise ValueError("no loss or evaluation metrics in " + ", ".join(map(str, runs)))
    has_time = any("wall_time" in row for rows in data for row in rows)
    nrows = 2 if has_time else 1
    fig, axes = plt.subplots(nrows, len(keys), figsize=(4 * len(keys), 3.2 * nrows), squeeze=False)
    for rows, label in zip(data, labels):
        t0 = min((r["wall_time"] for r in rows if "wall_time" in r), default=None)
        for j, key in enumerate(keys):
            pts = [r for r in rows if key in r and "step" in r]
            if not pts:
                continue
            style = dict(marker="o" if key in EVAL_KEYS else None, markersize=3, label=label)
            axes[0][j].plot([r["step"] for r in pts], [r[key] for r in pts], **style)
            timed = [r for r in pts if "wall_time" in r]
            if has_time and timed:
                axes[1][j].plot([(r["wall_time"] - t0) / 3600 for r in timed], [r[key] for r in timed], **style)
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
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output
