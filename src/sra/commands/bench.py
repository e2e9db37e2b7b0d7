"""`sra bench`: flags (the BenchConfig fields, declared once) -> BenchConfig -> sra.bench.run_benchmark; progress
lines, then one JSON object as the last line."""
from __future__ import annotations

import argparse
import json

from . import HelpFormatter
from .. import options
from ..train.bench import BenchConfig, run_benchmark


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "bench", help="time plain and SRA training steps on random data; prints a JSON line",
        description="Time full training steps (forward, teacher, backward, clipping, AdamW, EMA) with SRA on and off on "
                    "random data, interleaved, and print step times, images/s, achieved TFLOP/s (analytic FLOP count), "
                    "peak memory, the SRA/plain ratio and the EMA and teacher shares of the SRA step as one JSON object "
                    "on the last line. See docs/PERFORMANCE.md.",
        formatter_class=HelpFormatter)
    options.add_arguments(p, BenchConfig())
    p.add_argument("--dry-run", action="store_true", help="print the resolved benchmark config and exit")
    return p


def run(args) -> int:
    import dataclasses

    cfg = options.from_dict(BenchConfig, options.given(args, BenchConfig))
    if args.dry_run:
        cfg.validate()
        print(json.dumps(dataclasses.asdict(cfg)))
        return 0
    result = run_benchmark(cfg, log=lambda msg: print(msg, flush=True))
    print(json.dumps(result), flush=True)
    return 0
