"""`sra bench`: flags -> BenchConfig -> sra.bench.run_benchmark; progress lines, then one JSON object as the last line."""
from __future__ import annotations

import argparse
import json

from . import HelpFormatter
from ..models.presets import MODEL_NAMES


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "bench", help="time plain and SRA training steps on random data; prints a JSON line",
        description="Time full training steps (forward, teacher, backward, clipping, AdamW, EMA) with SRA on and off on "
                    "random data, interleaved, and print step times, images/s, achieved TFLOP/s (analytic FLOP count), "
                    "peak memory, the SRA/plain ratio and the EMA and teacher shares of the SRA step as one JSON object "
                    "on the last line. See docs/PERFORMANCE.md.",
        formatter_class=HelpFormatter)
    p.add_argument("--model", default="SiT-B/4", metavar="NAME", help=f"preset; one of {', '.join(MODEL_NAMES)}")
    p.add_argument("--input-size", type=int, default=32, help="input side in pixels or latents (256 px images: 32)")
    p.add_argument("--in-channels", type=int, default=4, help="input channels (SD-VAE latents: 4)")
    p.add_argument("--num-classes", type=int, default=1000, help="number of classes")
    p.add_argument("--batch-size", type=int, default=8, help="images per step")
    p.add_argument("--mixed-precision", default="no", choices=["no", "bf16"], help="student autocast precision")
    p.add_argument("--teacher-bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="run the teacher under bf16 autocast (default: as `sra train` resolves it for the preset)")
    p.add_argument("--compile", action="store_true", help="torch.compile the trained model and the teacher's forward_features, as `sra train --compile`")
    p.add_argument("--adamw", default="fused", choices=["default", "foreach", "fused"],
                   help="AdamW implementation: fused (as `sra train`), foreach, or torch's default (per-tensor on CPU)")
    p.add_argument("--block-out-s", type=int, default=0, help="student block (1-indexed; 0: the paper's default)")
    p.add_argument("--block-out-t", type=int, default=0, help="teacher block (1-indexed; 0: the paper's default)")
    p.add_argument("--methods", default="", help="more methods timed beside plain and SRA, comma-separated: "
                   "sra_dts_as, dts_as, self_flow, repa, or 'all' (token groups: the authors' DTS_AS recipe; repa: "
                   "features as if stored, projector 2048)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps per mode (compilation happens here)")
    p.add_argument("--steps", type=int, default=5, help="timed rounds (plain, SRA, teacher, EMA); medians are reported")
    p.add_argument("--device", default=None, choices=["cpu", "cuda"], help="device (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and random data")
    p.add_argument("--dry-run", action="store_true", help="print the resolved benchmark config and exit")
    return p


def run(args) -> int:
    import dataclasses

    from ..bench import METHODS, BenchConfig, run_benchmark

    cfg = BenchConfig(model=args.model, input_size=args.input_size, in_channels=args.in_channels,
                      num_classes=args.num_classes, batch_size=args.batch_size, mixed_precision=args.mixed_precision,
                      teacher_bf16=args.teacher_bf16, compile=args.compile, adamw=args.adamw,
                      block_out_s=args.block_out_s, block_out_t=args.block_out_t, warmup=args.warmup,
                      steps=args.steps, device=args.device, seed=args.seed,
                      methods=tuple(METHODS) if args.methods == "all" else tuple(m for m in args.methods.split(",") if m))
    if args.dry_run:
        cfg.validate()
        print(json.dumps(dataclasses.asdict(cfg)))
        return 0
    result = run_benchmark(cfg, log=lambda msg: print(msg, flush=True))
    print(json.dumps(result), flush=True)
    return 0
