"""`sra probe`: linear-probe accuracy of pooled tokens per block and timestep -> heat-map PNG + JSON.
Also the flag helpers `sra pca` shares (blocks, times, device, output folder). Inputs are noised by the model's own
process (the run's spec: its path, its time convention)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..runfolder import atomic_write, check_output, check_writable, writing
from . import HelpFormatter

TIMES_HELP = ("comma-separated times t in [0, 1] on SiT's scale (0 = data, 1 = noise); DiT models get the DDPM step "
              "round(1000 t), at most 999")


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run folder (its latest checkpoint), one of our checkpoints, or an authors' released "
                   "SiT/DiT(+SRA) checkpoint")
    p.add_argument("--blocks", default="all", help="token depths to look at: 'all' (0..depth) or e.g. 0,2,4; 0 = "
                   "embedded patches, d = after block d")
    p.add_argument("--times", default="0,0.1,0.3,0.5,0.7", help=TIMES_HELP)
    p.add_argument("--weights", default="ema", choices=("ema", "model"), help="which weights of a training checkpoint")
    p.add_argument("--seed", type=int, default=0, help="noise seed (per image: results do not depend on batch size)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--output-dir", default=None,
                   help="where to write (default: RUN/analysis for a run folder, else ./analysis-<checkpoint name>)")


def parse_blocks(spec: str, depth: int) -> list[int]:
    if spec.strip() == "all":
        return list(range(depth + 1))
    try:
        blocks = sorted({int(b) for b in spec.split(",") if b.strip()})
    except ValueError:
        raise ValueError(f"--blocks {spec!r}: expected 'all' or comma-separated integers") from None
    if not blocks or blocks[0] < 0 or blocks[-1] > depth:
        raise ValueError(f"--blocks {spec!r}: this model has depths 0..{depth}")
    return blocks


def parse_times(spec: str) -> list[float]:
    try:
        times = [float(t) for t in spec.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--times {spec!r}: expected comma-separated numbers in [0, 1]") from None
    if not times or not all(0.0 <= t <= 1.0 for t in times):
        raise ValueError(f"--times {spec!r}: expected comma-separated numbers in [0, 1] (0 = data, 1 = noise)")
    return times


def load_for_analysis(args):
    """(LoadedModel, its process (the run's, from its spec), device, output folder (not yet created)) from the shared
    flags."""
    import torch

    from ..generate import process_of
    from ..models.loading import load_model

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_model(args.run, weights=args.weights, device=device)
    run = Path(args.run)
    out = Path(args.output_dir) if args.output_dir else (run / "analysis" if run.is_dir() else
                                                         Path(f"analysis-{loaded.source.stem}"))
    return loaded, process_of(loaded), device, check_output(out, "--output-dir")


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "probe", help="linear-probe accuracy of the tokens per block and timestep (heat map + JSON)",
        description="Noise each image (fixed per-image seeds), run the first d blocks with the null label, average the "
                    "tokens, fit a linear classifier on the training split and report test accuracy, for every chosen "
                    "block d and time t. Writes probe.png (block x timestep heat map) and probe.json.",
        formatter_class=HelpFormatter)
    add_common(p)
    p.add_argument("--data-dir", default=None, help="labelled data as for `sra train` (IDX folder, image folder, "
                   "latent store, 'digits'; default: the run's data, else Fashion-MNIST/digits). Data without a test "
                   "split is split 80/20 (seeded)")
    p.add_argument("--max-train", type=int, default=10000, help="training images for the classifier, a seeded "
                   "random subset (0 = all)")
    p.add_argument("--max-test", type=int, default=5000, help="test images, a seeded random subset (0 = all)")
    p.add_argument("--classifier", default="logistic", choices=("logistic", "ridge"),
                   help="softmax regression (full batch, accelerated gradient, 100 steps) or closed-form ridge on "
                        "one-hot targets; both on PCA-whitened features")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    return p


def split_data(data_dir, seed: int):
    """(train set, train pool indices, test set, test pool indices); data with one split is split 80/20."""
    import torch

    from ..data import load_dataset

    train, test = load_dataset(data_dir, "train"), load_dataset(data_dir, "test")
    same = len(train) == len(test) and torch.equal(torch.as_tensor(train[0][0]), torch.as_tensor(test[0][0])) \
        and torch.equal(torch.as_tensor(train[len(train) - 1][0]), torch.as_tensor(test[len(test) - 1][0]))
    if not same:
        return train, torch.arange(len(train)), test, torch.arange(len(test))
    if len(train) < 10:
        raise ValueError(f"{len(train)} labelled images are too few to fit and test a probe")
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    cut = int(0.8 * len(train))
    print(f"no separate test split in the data: holding out {len(train) - cut} of {len(train)} images (seeded)")
    return train, perm[:cut].sort().values, test, perm[cut:].sort().values


def run(args) -> int:
    from ..analysis.probe import linear_probe, plot_probe, sample_indices

    if args.max_train < 0 or args.max_test < 0 or args.batch_size < 1:
        raise ValueError(f"--max-train and --max-test must be >= 0 and --batch-size >= 1 (got {args.max_train}, "
                         f"{args.max_test}, {args.batch_size})")
    loaded, process, device, out = load_for_analysis(args)
    check_writable(out)  # before the probe's work, not after it
    model = loaded.model
    blocks, times = parse_blocks(args.blocks, model.depth), parse_times(args.times)
    data_dir = args.data_dir if args.data_dir is not None else (loaded.config or {}).get("data_dir")
    train, train_pool, test, test_pool = split_data(data_dir, args.seed)
    want = (model.in_channels, model.input_size, model.input_size)
    if tuple(train.shape) != want:
        raise ValueError(f"the data is {'x'.join(map(str, train.shape))} but the model takes {'x'.join(map(str, want))}")

    result = linear_probe(model, process, train, test,
                          train_indices=train_pool[sample_indices(len(train_pool), args.max_train, args.seed)],
                          test_indices=test_pool[sample_indices(len(test_pool), args.max_test, args.seed)], blocks=blocks, times=times,
                          classifier=args.classifier, seed=args.seed, batch_size=args.batch_size, device=device,
                          progress=args.progress, log=print)
    record = {"checkpoint": str(loaded.source), "step": loaded.step, "data": str(getattr(train, "name", data_dir)),
              "process": loaded.process, **result.to_dict()}
    atomic_write(out / "probe.json", lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n"))
    step = f" step {loaded.step}" if loaded.step is not None else ""
    with writing(out):
        plot_probe(result, out / "probe.png", title=f"{Path(args.run).resolve().name}{step}: linear probe, test "
                                                    f"accuracy % ({result.classifier}; commonest class {100 * result.chance:.0f})")
    width = max(len(f"{t:g}") for t in times) + 2
    print("block".ljust(8) + "".join(f"t={t:g}".rjust(width + 2) for t in times))
    for b, row in zip(result.blocks, result.accuracy):
        print(("embed" if b == 0 else str(b)).ljust(8) + "".join(f"{100 * a:.1f}".rjust(width + 2) for a in row))
    # the floor of the heat map: always answering the commonest test class (a random test subset of balanced classes
    # is not exactly balanced, so this is above 1 / classes)
    print(f"chance: {100 * result.chance:.1f} % = the commonest class's share of the {result.num_test} test images "
          f"(uniform guessing among {result.num_classes} classes: {100 / result.num_classes:.1f} %)")
    print(f"wrote {out / 'probe.png'} and {out / 'probe.json'}")
    return 0
