"""How alike are a small SiT's block-s and block-m tokens? A check of the study's reading that SRA's target is too easy
to match in SiT-T/4 (docs/RESULTS.md). For each checkpoint's EMA and each t (student and teacher at the same t, no
head), over Fashion-MNIST test images with fixed noise:

- cos: mean per-token cosine of block-s and block-m tokens (= the no-head SRA distance with k = 0, as 1 - cos);
- cos_shuffled: the same with the block-m tokens of *another* image at the same position: the part of the similarity
  that every image shares (position embedding, shared directions of the residual stream);
- cos_centred: cosine after subtracting each block's mean token per position (over the images): the image-specific part;
- r2_linear: held-out R^2 of a least-squares linear map from block-s to block-m tokens (fit on half the images).

    python benchmarks/fmnist_token_similarity.py --init   # the study's seed-0 runs at 1200 and 600 steps
Prints a table and appends JSON lines to benchmarks/results/fmnist_token_similarity.jsonl.
"""
import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from sra.data.pixels import fashion_mnist_dataset
from sra.models import build_model
from sra.models.loading import load_model
from sra.checkpoint import checkpoint_path
from sra.process.flow_path import interpolate

ROOT = Path(__file__).resolve().parent.parent


def similarity(model, x, y, t: float, s: int, m: int, seed: int) -> dict[str, float]:
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    tt = torch.full((x.shape[0],), t)
    xt, _ = interpolate("linear", x, noise, tt)
    with torch.no_grad():
        hs = model.forward_features(xt, tt, y, depth=s).double()  # (N, T, D)
        hm = model.forward_features(xt, tt, y, depth=m).double()
    n = x.shape[0]
    cos = F.cosine_similarity(hs, hm, dim=-1).mean()
    shuffled = F.cosine_similarity(hs, hm.roll(1, dims=0), dim=-1).mean()
    centred = F.cosine_similarity(hs - hs.mean(0), hm - hm.mean(0), dim=-1).mean()
    a, b = hs.reshape(n * hs.shape[1], -1), hm.reshape(n * hm.shape[1], -1)
    half = (n // 2) * hs.shape[1]
    ones = torch.ones(a.shape[0], 1, dtype=a.dtype)
    a1 = torch.cat([a, ones], 1)
    w = torch.linalg.lstsq(a1[:half], b[:half]).solution
    resid = b[half:] - a1[half:] @ w
    r2 = 1 - resid.pow(2).sum() / (b[half:] - b[half:].mean(0)).pow(2).sum()
    return {"cos": float(cos), "cos_shuffled": float(shuffled), "cos_centred": float(centred), "r2_linear": float(r2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "study"), help="parent of the study's run folders")
    ap.add_argument("--runs", default="plain-s0,sra-s0,plain-s0@600,sra-no-head-s0@600",
                    help="comma-separated run names, each optionally @step (default step: --step)")
    ap.add_argument("--step", type=int, default=1200, help="checkpoint step")
    ap.add_argument("--init", action="store_true", help="also score a freshly initialised SiT-T/4 (seed 0)")
    ap.add_argument("--blocks", default="2,4", help="student block s, teacher block m")
    ap.add_argument("--times", default="0.1,0.3,0.5,0.7,0.9", help="noise levels t (1 = pure noise)")
    ap.add_argument("--images", type=int, default=512, help="test images")
    ap.add_argument("--seed", type=int, default=0, help="noise seed")
    ap.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "fmnist_token_similarity.jsonl"))
    args = ap.parse_args()
    s, m = map(int, args.blocks.split(","))
    test = fashion_mnist_dataset(split="test")  # [-1, 1], padded to 32 x 32 as in training
    x, y = test.x[:args.images].float(), test.y[:args.images]
    models = {}
    if args.init:
        torch.manual_seed(0)
        models["init (random weights)"] = build_model("SiT-T/4", input_size=32, in_channels=1, num_classes=10)
    for entry in args.runs.split(","):
        name, _, step = entry.partition("@")
        step = int(step or args.step)
        path = checkpoint_path(Path(args.runs_dir) / name, step)
        if not path.exists():
            raise SystemExit(f"error: no checkpoint {path}")
        models[f"{name} @ {step}"] = load_model(path).model
    print(f"blocks {s} -> {m}, {args.images} test images, same t for both, no head")
    print(f"{'model':<26}{'t':>5}{'cos':>8}{'shuffled':>10}{'centred':>9}{'R2 lin':>8}")
    with open(args.output, "a") as f:
        for label, model in models.items():
            model.eval()
            for t in map(float, args.times.split(",")):
                r = similarity(model, x, y, t, s, m, args.seed)
                print(f"{label:<26}{t:>5.1f}{r['cos']:>8.3f}{r['cos_shuffled']:>10.3f}{r['cos_centred']:>9.3f}"
                      f"{r['r2_linear']:>8.3f}")
                f.write(json.dumps({"model": label, "t": t, "blocks": [s, m], "images": args.images, **r,
                                    "time": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")


if __name__ == "__main__":
    main()
