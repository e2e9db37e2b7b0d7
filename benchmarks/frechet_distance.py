"""Time sra's Fréchet distance against the sqrtm formula of pytorch-fid/ADM, and check that they agree.

Statistics are those of Gaussian-like features: n samples of a D-dimensional vector with a decaying spectrum (like
Inception pool features, whose covariance eigenvalues fall by orders of magnitude), two sets with different means and
mixings. Both sides get the same float64 (mu, sigma); the reference is

    ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr(Re(sqrtm(S1 @ S2)))

(pytorch-fid's formula, without its eps retry). For n <= D the covariances are singular: sqrtm is then inexact and
pytorch-fid adds eps to the diagonals when it fails; the table shows both figures as they come.

    OMP_NUM_THREADS=1 python benchmarks/frechet_distance.py                  # 2048-d, 1000 and 10000 samples
    python benchmarks/frechet_distance.py --dim 512 --samples 2000 --repeats 3

Writes benchmarks/results/frechet_distance.jsonl (one row per setting, appended, with the machine and thread count).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import scipy.linalg

from sra.evaluation.metrics import frechet_distance, gaussian_stats


def sqrtm_reference(mu1, s1, mu2, s2) -> float:
    root = scipy.linalg.sqrtm(s1 @ s2)
    root = root[0] if isinstance(root, tuple) else root  # older scipy returns (root, error estimate)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(root.real))


def features(rng: np.random.Generator, n: int, dim: int, shift: float) -> np.ndarray:
    """n samples with eigenvalues falling as 1/k (a random rotation of them) plus a mean shift."""
    scales = 1.0 / np.sqrt(np.arange(1, dim + 1))
    mix = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    return (rng.standard_normal((n, dim)) * scales) @ mix + shift


def best_of(fn, repeats: int) -> tuple[float, float]:
    """(value, best wall seconds) over `repeats` calls."""
    times, value = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return value, min(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dim", type=int, default=2048, help="feature dimension (Inception pool: 2048)")
    ap.add_argument("--samples", default="1000,10000", help="comma-separated sample counts per set")
    ap.add_argument("--repeats", type=int, default=2, help="timed calls per method; the best is reported")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "frechet_distance.jsonl")
    args = ap.parse_args(argv)

    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    print(f"dim {args.dim}, OMP_NUM_THREADS={threads}, best of {args.repeats}, {platform.processor() or platform.machine()}")
    print(f"{'samples':>8} {'sra (s)':>9} {'sqrtm (s)':>10} {'speed-up':>9} {'FD sra':>14} {'FD sqrtm':>14} {'rel diff':>9}")
    for n in (int(s) for s in args.samples.split(",")):
        rng = np.random.default_rng(args.seed)
        mu1, s1 = gaussian_stats(features(rng, n, args.dim, 0.0))
        mu2, s2 = gaussian_stats(features(rng, n, args.dim, 0.05))
        ours, t_ours = best_of(lambda: frechet_distance(mu1, s1, mu2, s2), args.repeats)
        ref, t_ref = best_of(lambda: sqrtm_reference(mu1, s1, mu2, s2), args.repeats)
        rel = abs(ours - ref) / abs(ref)
        print(f"{n:>8} {t_ours:>9.2f} {t_ref:>10.2f} {t_ref / t_ours:>8.1f}x {ours:>14.8f} {ref:>14.8f} {rel:>9.1e}")
        row = dict(dim=args.dim, samples=n, seconds_sra=round(t_ours, 3), seconds_sqrtm=round(t_ref, 3),
                   fd_sra=ours, fd_sqrtm=ref, rel_diff=rel, repeats=args.repeats, omp_num_threads=threads,
                   cpus=os.cpu_count(), load_1min=round(os.getloadavg()[0], 2), numpy=np.__version__,
                   scipy=scipy.__version__, when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
    print(f"rows appended to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
