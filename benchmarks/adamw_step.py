"""One AdamW step over a preset's parameters with torch's default implementation, foreach=True and fused=True.

    python benchmarks/adamw_step.py --model SiT-B/4 --repeats 5

Prints one JSON line of median seconds per step (interleaved repeats). On CPUs torch's default is the per-tensor loop.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

import sra


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="SiT-B/4", help="preset")
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per implementation")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    params = [p for p in sra.build_model(args.model, input_size=32, in_channels=4).to(device).parameters()
              if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    opts = {"default": torch.optim.AdamW(params, lr=1e-4), "foreach": torch.optim.AdamW(params, lr=1e-4, foreach=True),
            "fused": torch.optim.AdamW(params, lr=1e-4, fused=True)}
    for opt in opts.values():  # creates the state
        opt.step()
    times = {k: [] for k in opts}
    for _ in range(args.repeats):
        for k, opt in opts.items():
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            opt.step()
            if device == "cuda":
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t0)
    print(json.dumps({"model": args.model, "parameters": sum(p.numel() for p in params), "device": device,
                      **{k: statistics.median(v) for k, v in times.items()}}))


if __name__ == "__main__":
    main()
