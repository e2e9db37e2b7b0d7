"""The SRA teacher forward alone, in four modes: fp32 or bf16 autocast, under no_grad or inference_mode.

Why: the teacher's precision default should follow the hardware (bf16 pays only where matmuls are native bf16), and
inference_mode is only worth its risk (its outputs are the target of a loss with a backward; whether autograd accepts
them is checked at the end) if it is faster than no_grad. Prints one JSON line of median times in seconds.

    python benchmarks/teacher_forward.py --model SiT-B/4 --batch-size 8 --depth 8 --repeats 7
"""
from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch
import torch.nn.functional as F

import sra


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="SiT-B/4", help="preset")
    ap.add_argument("--input-size", type=int, default=32, help="input side (latents)")
    ap.add_argument("--in-channels", type=int, default=4, help="input channels")
    ap.add_argument("--batch-size", type=int, default=8, help="images per forward")
    ap.add_argument("--depth", type=int, default=8, help="teacher blocks run (block_out_t)")
    ap.add_argument("--repeats", type=int, default=7, help="timed repeats per mode (interleaved); medians reported")
    args = ap.parse_args()

    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    teacher = sra.build_model(args.model, input_size=args.input_size, in_channels=args.in_channels,
                              num_classes=1000).to(device).requires_grad_(False).eval()
    x = torch.randn(args.batch_size, args.in_channels, args.input_size, args.input_size, device=device)
    t, y = torch.rand(args.batch_size, device=device), torch.randint(0, 1000, (args.batch_size,), device=device)

    def forward(bf16: bool, grad_mode) -> torch.Tensor:
        ctx = torch.autocast(device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        with grad_mode(), ctx:
            return teacher.forward_features(x, t, y, depth=args.depth).float()

    modes = {f"{p}_{g.__name__}": (p == "bf16", g) for p in ("fp32", "bf16") for g in (torch.no_grad,
                                                                                      torch.inference_mode)}
    for bf16, g in modes.values():  # warm-up
        forward(bf16, g)
    times = {k: [] for k in modes}
    for _ in range(args.repeats):
        for k, (bf16, g) in modes.items():
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            forward(bf16, g)
            if device == "cuda":
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t0)

    # Can inference_mode's output be the target of the alignment loss (cosine distance, then backward)?
    pred = torch.randn(args.batch_size, 1, teacher.hidden_size, device=device, requires_grad=True)
    try:
        (1 - F.cosine_similarity(pred, forward(False, torch.inference_mode), dim=-1)).mean().backward()
        inference_ok = True
    except RuntimeError:
        inference_ok = False
    print(json.dumps({"model": args.model, "batch_size": args.batch_size, "depth": args.depth, "device": device,
                      "torch": torch.__version__, **{k: statistics.median(v) for k, v in times.items()},
                      "inference_mode_usable_as_target": inference_ok}))


if __name__ == "__main__":
    main()
