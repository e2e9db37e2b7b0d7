"""`sra plot RUN [RUN ...]`: loss terms and FID/FD against steps and wall-clock hours, runs overlaid, as one PNG."""
from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "plot", help="plot training curves of one or more runs (loss terms, FID) into a PNG",
        description="Plot each run's metrics.jsonl: loss terms and evaluation metrics (FID, FD-FMNIST, IS) against "
                    "optimizer steps (top row) and wall-clock hours (bottom row), several runs overlaid; "
                    "e.g. `sra plot runs/plain runs/sra`.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder (or a metrics.jsonl file)")
    p.add_argument("--output", default="curves.png", help="PNG to write (default: curves.png)")
    p.add_argument("--labels", default=None, help="comma-separated legend labels, one per run (default: folder names)")
    return p


def run(args) -> int:
    from ..analysis.curves import plot_runs
    from ..runfolder import check_output

    check_output(args.output, "--output")
    labels = args.labels.split(",") if args.labels else None
    if labels is not None and len(labels) != len(args.runs):
        raise ValueError(f"{len(labels)} labels for {len(args.runs)} runs")
    print(plot_runs(args.runs, args.output, labels))
    return 0
