"""The ADM-style metric suite on image sets: FID, sFID, Inception Score, precision, recall.

A reference is an image set (.npz or folder), an ADM reference batch (`mu`, `sigma`, `mu_s`, `sigma_s`, `arr_0`), or
statistics written by `save_stats` (`sra eval --save-stats`). Precomputed `mu`/`sigma` are used as they are; precision
and recall need per-image pool features, taken from a stats file's `pool` or computed from the batch's `arr_0`.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..runfolder import atomic_write
from .images import load_arrays, npz_keys, open_images
from .inception import POOL_DIM, SPATIAL_DIM, InceptionV3Features
from .metrics import RunningStats, frechet_distance, inception_score, precision_recall

STATS_FORMAT = "sra-inception-stats-v1"


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def inception_activations(images, net: InceptionV3Features, batch_size: int = 50, progress: bool = True,
                          desc: str = "inception") -> dict[str, np.ndarray]:
    """One pass over an image set: float64 running statistics of pool and spatial features, plus the per-image pool
    features (precision/recall) and logits (Inception Score), float32."""
    from tqdm.auto import tqdm

    pool_stats, spatial_stats = RunningStats(POOL_DIM), RunningStats(SPATIAL_DIM)
    pools, logits = [], []
    device = net.fc.weight.device
    with tqdm(total=images.num_images, desc=desc, unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for batch in images.batches(batch_size):
            x = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float() / 255.0  # (n, C, H, W) in [0, 1]
            out = net.features(x)
            pool_stats.update(out["pool"])
            spatial_stats.update(out["spatial"])
            pools.append(out["pool"].float().cpu().numpy())
            logits.append(out["logits"].float().cpu().numpy())
            bar.update(len(batch))
    mu, sigma = pool_stats.mean_cov()
    mu_s, sigma_s = spatial_stats.mean_cov()
    return dict(mu=mu, sigma=sigma, mu_s=mu_s, sigma_s=sigma_s, pool=np.concatenate(pools),
                logits=np.concatenate(logits), preprocess=net.preprocessing)


def save_stats(path: str | os.PathLike, acts: dict[str, np.ndarray]) -> Path:
    """Write mu, sigma, mu_s, sigma_s (float64) and the pool features (float32) to an .npz usable as REFERENCE."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a name
            np.savez(f, format=np.array(STATS_FORMAT), preprocess=np.array(acts["preprocess"]),
                     **{k: acts[k] for k in ("mu", "sigma", "mu_s", "sigma_s", "pool")})

    atomic_write(path, write)  # a full disk: one line, no temporary file left
    return path


def reference_statistics(path, net: InceptionV3Features, batch_size: int = 50, progress: bool = True,
                         recompute: bool = False) -> tuple[dict[str, np.ndarray], str]:
    """(statistics, where they came from). recompute=True ignores stored mu/sigma and runs our network on arr_0."""
    keys = npz_keys(path)
    if not recompute and {"mu", "sigma"} <= keys:
        stats = load_arrays(path, ("mu", "sigma", "mu_s", "sigma_s", "pool", "preprocess"))
        if "preprocess" in stats and str(stats["preprocess"]) != net.preprocessing:
            raise ValueError(f"{path} was computed with --preprocess {stats['preprocess']}; evaluate the samples the "
                             "same way")
        if stats["mu"].shape != (POOL_DIM,) or stats["sigma"].shape != (POOL_DIM, POOL_DIM):
            raise ValueError(f"{path}: mu/sigma have shapes {stats['mu'].shape}/{stats['sigma'].shape}, "
                             f"expected ({POOL_DIM},)/({POOL_DIM}, {POOL_DIM}) Inception pool statistics")
        source = "stored statistics" if "format" in keys else "stored statistics (ADM reference batch)"
        if "pool" not in stats and "arr_0" in keys:  # ADM batches: images only for precision/recall
            acts = inception_activations(open_images(path), net, batch_size, progress, desc="reference")
            stats["pool"] = acts["pool"]
            source += "; precision/recall features from its arr_0 with our network"
        return stats, source
    if keys and "arr_0" not in keys:
        raise ValueError(f"{path} has neither mu/sigma statistics nor arr_0 images (arrays: {', '.join(sorted(keys))})")
    return inception_activations(open_images(path), net, batch_size, progress, desc="reference"), \
        "computed with our network"


def compare(sample_acts: dict, ref: dict, k: int = 3) -> dict[str, float | None]:
    """FID, sFID, precision, recall; None where the reference lacks what a metric needs."""
    out: dict[str, float | None] = {
        "fid": frechet_distance(sample_acts["mu"], sample_acts["sigma"], ref["mu"], ref["sigma"])}
    has_spatial = "mu_s" in ref and "sigma_s" in ref
    out["sfid"] = frechet_distance(sample_acts["mu_s"], sample_acts["sigma_s"], ref["mu_s"], ref["sigma_s"]) \
        if has_spatial else None
    if "pool" in ref:
        out["precision"], out["recall"] = precision_recall(ref["pool"], sample_acts["pool"], k=k)
    else:
        out["precision"] = out["recall"] = None
    return out


def evaluate_inception(samples, reference, weights_path=None, batch_size: int = 50, device=None,
                       progress: bool = True, recompute_reference: bool = False, save_stats_to=None,
                       preprocess: str = "pytorch-fid") -> dict:
    """Score an image set against a reference; with reference None, only compute (and save) the sample statistics."""
    images = open_images(samples)  # bad samples fail before the network loads or the reference pass runs
    if reference is not None and not npz_keys(reference):
        open_images(reference)
    net = InceptionV3Features(weights_path, preprocess=preprocess).to(device or default_device())
    ref, source = (None, None)
    if reference is not None:
        ref, source = reference_statistics(reference, net, batch_size, progress, recompute_reference)
    acts = inception_activations(images, net, batch_size, progress, desc="samples")
    result = {"samples": str(samples), "num_samples": int(images.num_images),
              "image_size": list(images.image_shape), "inception_weights": str(net.weights_path),
              "preprocess": preprocess}
    result["inception_score"], result["inception_score_std"] = inception_score(acts["logits"])
    if save_stats_to is not None:
        result["saved_stats"] = str(save_stats(save_stats_to, acts))
    if ref is not None:
        result.update(reference=str(reference), reference_source=source, **compare(acts, ref))
    return result
