"""`sra eval`: FID / sFID / IS / precision / recall with the FID Inception network, or FD-FMNIST for small runs."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "eval", help="score samples: FID, sFID, IS, precision, recall (Inception) or FD-FMNIST",
        description="Score generated images. --metric inception (default): SAMPLES is an ADM-format .npz (arr_0 uint8 "
                    "N x H x W x 3) or a folder of PNGs; REFERENCE the same, an ADM reference batch (mu, sigma, mu_s, "
                    "sigma_s, arr_0) or statistics from --save-stats. Needs pytorch-fid's Inception weights file "
                    "(nothing is downloaded). --metric fmnist: SAMPLES is a run folder or checkpoint (samples are "
                    "generated) or an .npz (labels from its `labels` or `arr_1` array, if any); no REFERENCE, the "
                    "Fashion-MNIST test split is the reference. Prints a table and writes JSON.")
    p.add_argument("samples", metavar="SAMPLES", help="images to score (.npz or folder), or for fmnist a run folder, "
                   "checkpoint or .npz")
    p.add_argument("reference", metavar="REFERENCE", nargs="?", default=None,
                   help="reference images or statistics (inception metric; omit with --save-stats to only save)")
    p.add_argument("--metric", default="inception", choices=("inception", "fmnist"),
                   help="which suite (default: inception)")
    p.add_argument("--output", default=None, help="JSON file for the results (default: beside SAMPLES, "
                   "<name>_eval.json, with --metric fmnist <name>_fmnist.json; for a run folder "
                   "RUN/eval_fmnist_step<N>.json)")
    p.add_argument("--batch-size", type=int, default=50, help="images per forward pass (default: 50)")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="hide the progress bar")
    g = p.add_argument_group("inception metric")
    g.add_argument("--inception-weights", default=None, metavar="PATH",
                   help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth (default: $TORCH_HOME/hub/checkpoints/)")
    g.add_argument("--save-stats", default=None, metavar="NPZ",
                   help="also save the statistics of SAMPLES (mu, sigma, mu_s, sigma_s, pool features) for reuse "
                        "as a REFERENCE")
    g.add_argument("--preprocess", default="pytorch-fid", choices=("pytorch-fid", "adm"),
                   help="resize/normalisation before the network: pytorch-fid's (default; PyTorch bilinear, 2x - 1) or "
                        "the ADM graph's (TF 1.x bilinear, (x - 128) / 128); see docs/EVALUATION.md")
    g.add_argument("--recompute-reference", action="store_true",
                   help="ignore mu/sigma stored in an ADM reference batch and run our network on its arr_0")
    g = p.add_argument_group("fmnist metric (run folder or checkpoint)")
    g.add_argument("--num-samples", type=int, default=1000,
                   help="samples to generate, classes balanced (default: 1000)")
    g.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    g.add_argument("--sample-steps", type=int, default=30, help="Euler ODE steps, DDIM steps for DiT (default: 30)")
    g.add_argument("--weights", default="ema", choices=("ema", "model"),
                   help="which weights of a checkpoint (default: ema)")
    g.add_argument("--classifier", default="cnn", choices=("cnn", "resnet"),
                   help="whose features and labels: cnn (default; also REPA's `--repa-encoder fmnist` target) or "
                        "resnet (another architecture and seed: score runs aligned to the cnn's features with it). "
                        "Each is trained once and cached (default: cnn)")
    return p


def default_output(args, step: int | None = None) -> Path:
    if args.output:
        return Path(args.output)
    src = Path(args.samples)
    name = "fmnist" if getattr(args, "classifier", "cnn") == "cnn" else f"fmnist-{args.classifier}"
    if args.metric == "fmnist" and src.is_dir():
        return src / f"eval_{name}_step{step if step is not None else 'unknown'}.json"
    suffix = f"_{name}.json" if args.metric == "fmnist" else "_eval.json"
    return src.with_name(src.stem + suffix) if src.suffix else src.with_name(src.name + suffix)


def run_fmnist(args) -> tuple[dict, Path]:
    import numpy as np
    import torch

    from ..evaluation.fmnist import fmnist_scorer, fmnist_scores, generate_samples
    from ..evaluation.images import load_arrays, npz_keys, open_images

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    src = Path(args.samples)
    result: dict = {"samples": str(src)}
    step = None
    if src.suffix == ".npz" and src.is_file():
        images = open_images(src)  # validates arr_0 (uint8, shape)
        x = np.concatenate(list(images.batches(10_000)))
        labels = next((load_arrays(src, [k])[k] for k in ("labels", "arr_1") if k in npz_keys(src)), None)
    else:
        from ..generate import process_of
        from ..models.loading import load_model

        loaded = load_model(src, weights=args.weights, device=device)
        m = loaded.model
        if m.in_channels != 1 or m.input_size not in (28, 32):
            raise ValueError(f"{loaded.source} is a {m.in_channels}-channel {m.input_size}x{m.input_size} model; "
                             "FD-FMNIST needs a 1-channel 28x28 or 32x32 pixel model")
        x, labels = generate_samples(m, process_of(loaded), args.num_samples, device, args.seed, args.sample_steps,
                                     batch_size=250)
        step = loaded.step
        result.update(checkpoint=str(loaded.source), step=step, seed=args.seed, sample_steps=args.sample_steps)
    scorer = fmnist_scorer(device, progress=args.progress, classifier=args.classifier)
    result.update(fmnist_scores(x, labels, scorer=scorer))
    result["classifier"] = {"test_accuracy": scorer.test_accuracy, **scorer.info}
    return result, default_output(args, step)


def run(args) -> int:
    from ..runfolder import atomic_write, check_output, check_writable, writing

    for path in (default_output(args), args.save_stats):  # checked before the (long) scoring, not after it
        if path is not None:
            check_output(path, "--output" if path is not args.save_stats else "--save-stats")
            check_writable(Path(path).parent)
    if args.metric == "fmnist":
        if args.reference is not None:
            raise ValueError("--metric fmnist takes no REFERENCE (the Fashion-MNIST test split is the reference)")
        result, out = run_fmnist(args)
        rows = [(f"FD-FMNIST ({args.classifier})", result["fd_fmnist"]), ("class accuracy", result.get("class_acc")),
                ("samples", result["num_samples"]), ("classifier test acc.", result["classifier"]["test_accuracy"])]
    else:
        from ..evaluation.suite import evaluate_inception

        if args.classifier != "cnn":
            raise ValueError("--classifier chooses the FD-FMNIST classifier; it needs --metric fmnist")
        if args.reference is None and args.save_stats is None:
            raise ValueError("give a REFERENCE to compare with, or --save-stats NPZ to only save statistics")
        with writing(args.save_stats or default_output(args)):
            result = evaluate_inception(args.samples, args.reference, args.inception_weights, args.batch_size,
                                        args.device, args.progress, args.recompute_reference, args.save_stats,
                                        args.preprocess)
        out = default_output(args)
        rows = [(name, result.get(key)) for name, key in
                (("FID", "fid"), ("sFID", "sfid"), ("Inception Score", "inception_score"),
                 ("precision", "precision"), ("recall", "recall"))] + [("samples", result["num_samples"])]
    print(f"{'metric':<22}{'value':>12}")
    for name, value in rows:
        text = "n/a" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))
        print(f"{name:<22}{text:>12}")
    if result.get("saved_stats"):
        print(f"statistics saved to {result['saved_stats']}")
    atomic_write(out, lambda tmp: tmp.write_text(json.dumps(result, indent=2) + "\n"))
    print(f"results written to {out}")
    return 0
