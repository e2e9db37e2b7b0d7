"""FID and Inception Score of the EMA during training (`sra train --eval-every N --eval-ref REF`).

The samples are exactly those `sra generate RUN --mode ode|ddim --steps S --cfg-scale 1 --seed SEED` would write
(per-image seeds and labels, the run's sampler and VAE decoding, uint8 quantisation), so the FID logged here equals
`sra eval` on that samples.npz against the same reference. Under torchrun each rank samples every W-th image; the
Inception features are gathered on rank 0, which computes the scores. The ranks agree after every batch whether any of
them failed to sample or embed it: if one did, every rank gives up this evaluation within a batch (one warning each
from the failed ranks and rank 0) and training goes on in step.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .. import distributed
from ..data.grid import to_uint8
from ..generate import SamplerOptions, image_labels, make_decoder, sample_images
from ..models.loading import LoadedModel
from ..runfolder import on_rank0
from .images import load_arrays, npz_keys
from .inception import NUM_LOGITS, POOL_DIM, InceptionV3Features
from .metrics import frechet_distance, gaussian_stats, inception_score
from .suite import reference_statistics


class TrainingFID:
    """Set up once (Inception network, reference statistics on rank 0, the VAE decoder); call with the EMA model."""

    def __init__(self, ema, *, process, run_config: dict, reference: str, num_samples: int, num_steps: int,
                 seed: int, batch_size: int, inception_weights: str | None = None, device="cpu"):
        self.num_samples, self.seed, self.batch_size, self.device = num_samples, seed, batch_size, device
        self.loaded = LoadedModel(ema, run_config["process"], run_config, Path(reference), None)
        self.process = process
        # the run's sample-grid sampler, deterministic
        self.opts = SamplerOptions(mode=process.grid_mode, num_steps=num_steps, cfg_scale=1.0).resolve(process)
        self.decode = make_decoder(self.loaded)
        self.net = InceptionV3Features(inception_weights).to(device).eval()
        self.ref = on_rank0(lambda: self.reference_stats(reference))  # every rank raises if rank 0 refuses

    def reference_stats(self, reference: str) -> dict:
        """mu and sigma of the reference, checked now (2048-d, finite) rather than at the first evaluation."""
        if {"mu", "sigma"} <= npz_keys(reference):  # stored statistics: FID needs nothing else (no pass over arr_0)
            ref = load_arrays(reference, ("mu", "sigma", "preprocess"))
            if str(ref.get("preprocess", self.net.preprocessing)) != self.net.preprocessing:
                raise ValueError(f"{reference} was computed with --preprocess {ref['preprocess']}; "
                                 "in-training FID uses pytorch-fid's preprocessing")
        else:
            ref, _ = reference_statistics(reference, self.net, progress=False)
        mu, sigma = np.asarray(ref["mu"]), np.asarray(ref["sigma"])
        if mu.shape != (POOL_DIM,) or sigma.shape != (POOL_DIM, POOL_DIM):
            raise ValueError(f"--eval-ref {reference}: statistics of shape {mu.shape} and {sigma.shape}, not the "
                             f"Inception pool features' ({POOL_DIM},) and ({POOL_DIM}, {POOL_DIM})")
        if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
            raise ValueError(f"--eval-ref {reference}: its statistics hold NaN or infinite values")
        return ref

    @torch.no_grad()
    def __call__(self) -> dict[str, float]:
        """{'fid', 'inception_score'} on rank 0, {} elsewhere. All ranks must call it (features are gathered)."""
        pools, logits = [], []
        for idx in distributed.strided_batches(self.num_samples, self.batch_size):
            out, error, failed = distributed.failed_anywhere(self.features, idx)
            if failed:  # every rank gives this evaluation up; none waits in the gathers below for one that failed
                if error is not None:
                    raise error
                if not distributed.current().is_main:
                    return {}
                raise RuntimeError("another rank could not sample or embed its share (its own warning says why)")
            if out is not None:
                pools.append(out[0])
                logits.append(out[1])
        pool = distributed.gather_strided(np.concatenate(pools) if pools else np.zeros((0, POOL_DIM)))
        logit = distributed.gather_strided(np.concatenate(logits) if logits else np.zeros((0, NUM_LOGITS), np.float32))
        if pool is None:
            return {}
        mu, sigma = gaussian_stats(pool)
        return {"fid": frechet_distance(mu, sigma, self.ref["mu"], self.ref["sigma"]),
                "inception_score": inception_score(logit)[0]}

    def features(self, idx: list[int]) -> tuple[np.ndarray, np.ndarray] | None:
        """Inception pool features and logits of images idx (None for an empty batch)."""
        if not idx:
            return None
        y = image_labels(self.seed, idx, self.loaded.model.num_classes)
        images = to_uint8(sample_images(self.loaded, self.process, self.opts, self.seed, idx, y, self.decode))
        x = torch.from_numpy(images).to(self.device).permute(0, 3, 1, 2).float() / 255.0  # as `sra eval` reads
        out = self.net.features(x)
        return out["pool"].double().cpu().numpy(), out["logits"].float().cpu().numpy()
