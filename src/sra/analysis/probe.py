"""Linear probes of a diffusion transformer's tokens, per block and per noise level (SRA paper, Fig. 3 / Table 5).

For each timestep t and each block depth d, every image is noised with its own fixed noise (per-image seeds, so the
result does not depend on the batch size), run through the first d blocks with the null label (so the probe cannot
read the class off the label embedding), and its tokens are average-pooled to one D-vector. A linear classifier fitted
on the training split's vectors is scored on the test split's.

Times are always given on SiT's scale, t in [0, 1] with t = 0 data; the model's process says what its timestep
embedder receives and how inputs are noised (`process.model_time`, `process.noisy`: for DiT the integer DDPM step
round(1000 t), capped at 999, on the linear-beta schedule).
"""
from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..estimate import FirstBatchEstimate
from ..runfolder import atomic_write

DEFAULT_TIMES = (0.0, 0.1, 0.3, 0.5, 0.7)
CLASSIFIERS = ("logistic", "ridge")


# ----------------------------------------------------------------------------------------------------------------
# Noising and tokens (shared with sra.analysis.pca)
# ----------------------------------------------------------------------------------------------------------------

def per_image_noise(indices, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Standard normal noise (N, *shape), image i drawn from its own generator: independent of batching."""
    out = torch.empty(len(indices), *shape)
    g = torch.Generator()
    for row, i in enumerate(indices):
        g.manual_seed((int(seed) << 32) + int(i))
        out[row] = torch.randn(shape, generator=g)
    return out


def null_labels(model, n: int, device=None) -> torch.Tensor:
    """n copies of the null label `num_classes` (the unconditional row of the class table)."""
    if model.y_embedder.embedding_table.num_embeddings <= model.num_classes:
        raise ValueError("this model has no null-label row (trained without label dropout); cannot probe unconditionally")
    return torch.full((n,), model.num_classes, dtype=torch.long, device=device)


@torch.no_grad()
def block_tokens(model, x: torch.Tensor, t, y: torch.Tensor, depths) -> dict[int, torch.Tensor]:
    """Tokens (N, T, D) after each depth in `depths` (0 = embedded patches), from one pass through the blocks;
    identical to `model.forward_features(x, t, y, d)` for each d, without re-running the shared prefix."""
    depths = sorted(set(depths))
    if depths and not 0 <= depths[0] <= depths[-1] <= model.depth:
        raise ValueError(f"block depths {depths} outside 0..{model.depth}")
    t = torch.as_tensor(t, dtype=torch.float32, device=x.device).expand(x.shape[0])
    h, c, index = model.embed(x, t, y)  # (N, T, D), (N, D), None
    out = {0: h} if 0 in depths else {}
    for i, block in enumerate(model.blocks[:depths[-1] if depths else 0]):
        h = block(h, c, None, index)
        if i + 1 in depths:
            out[i + 1] = h
    return out


# ----------------------------------------------------------------------------------------------------------------
# Pooled features of a dataset
# ----------------------------------------------------------------------------------------------------------------

def dataset_batch(dataset, indices: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean model inputs and labels for `indices`; latent stores sample their posterior with a seeded generator."""
    if hasattr(dataset, "get_batch"):
        x, y = dataset.get_batch(indices)
    else:
        items = [dataset[int(i)] for i in indices]
        x, y = torch.stack([torch.as_tensor(a) for a, _ in items]), torch.as_tensor([int(b) for _, b in items])
    g = torch.Generator().manual_seed((int(seed) << 32) + 0x5EED + int(indices[0]))
    return dataset.prepare_batch(x, generator=g), torch.as_tensor(y).long()


def sample_indices(n: int, limit: int | None, seed: int) -> torch.Tensor:
    """All of 0..n-1, or a seeded random subset of `limit` of them (sorted); class-sorted folders stay balanced."""
    if not limit or limit >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit].sort().values


@torch.no_grad()
def pooled_features(model, process, dataset, indices: torch.Tensor, t: float, depths, *, seed: int = 0,
                    batch_size: int = 256, device="cpu",
                    on_batch: Callable[[int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pooled tokens (len(depths), N, D) in float32 on the CPU, and labels (N,), at one time t.
    on_batch(n) is called after each batch of n images (progress, estimate)."""
    depths = sorted(set(depths))
    feats, labels = [], []
    for start in range(0, len(indices), batch_size):
        idx = indices[start:start + batch_size]
        x0, y = dataset_batch(dataset, idx, seed)
        noise = per_image_noise(idx.tolist(), tuple(x0.shape[1:]), seed)
        xt = process.noisy(x0.to(device).float(), noise.to(device), t)
        tokens = block_tokens(model, xt, process.model_time(t), null_labels(model, len(idx), device), depths)
        feats.append(torch.stack([tokens[d].float().mean(dim=1).cpu() for d in depths]))  # (B, N, D)
        labels.append(y)
        if on_batch is not None:
            on_batch(len(idx))
    return torch.cat(feats, dim=1), torch.cat(labels)


# ----------------------------------------------------------------------------------------------------------------
# Linear classifiers
# ----------------------------------------------------------------------------------------------------------------

def fit_linear_classifier(x: torch.Tensor, y: torch.Tensor, num_classes: int, method: str = "logistic",
                          l2: float = 1e-4, max_iter: int = 100) -> callable:
    """Fit on features x (N, D), labels y (N,); returns a function features -> predicted labels.

    Features are PCA-whitened with the training statistics (directions with variance below 1e-6 of the largest are
    dropped): a linear classifier can express the same functions, and the fit becomes well conditioned, so that
    gradient descent converges in ~100 steps (pooled tokens are strongly correlated; on standardised features it
    needed over 1000). The penalty l2 |W|^2 therefore acts on whitened weights. `ridge`: closed-form least squares
    on one-hot targets, penalty l2 * N; `logistic`: softmax regression (`softmax_regression`). Float64, on x's device.
    """
    if method not in CLASSIFIERS:
        raise ValueError(f"unknown classifier {method!r}; choices: {', '.join(CLASSIFIERS)}")
    x = x.double()
    mean = x.mean(0)
    var, vec = torch.linalg.eigh(torch.cov((x - mean).T))  # ascending variances
    keep = var > 1e-6 * var[-1].clamp_min(1e-30)
    whiten = vec[:, keep] / var[keep].sqrt()  # (D, D')

    def design(f: torch.Tensor) -> torch.Tensor:  # (N, D' + 1): whitened features and a bias column
        f = (f.double().to(mean.device) - mean) @ whiten
        return torch.cat([f, torch.ones(len(f), 1, dtype=f.dtype, device=f.device)], dim=1)

    a = design(x)
    n, d = a.shape
    if method == "ridge":
        reg = l2 * n * torch.eye(d, dtype=a.dtype, device=a.device)
        reg[-1, -1] = 0.0  # the bias is not penalised
        w = torch.linalg.solve(a.T @ a + reg, a.T @ F.one_hot(y.to(a.device), num_classes).to(a))
    else:
        w = softmax_regression(a, y.to(a.device), num_classes, l2, max_iter)
    return lambda f: (design(f) @ w).argmax(dim=1)


def softmax_regression(a: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, max_iter: int) -> torch.Tensor:
    """Weights (D, K) minimising mean cross-entropy(a @ w, y) + l2 |w[:-1]|^2 (the last row, the bias, is free).

    Nesterov's accelerated gradient with step 1/L and adaptive restart (O'Donoghue & Candes 2015), in plain tensor ops:
    no autograd, no torch.optim, no second thread pool, so that many small fits stay fast on a busy CPU; runs on a
    GPU as is. L = 0.5 lambda_max(A^T A / N) + 2 l2 bounds the Hessian (the softmax Jacobian has norm <= 1/2)."""
    n, d = a.shape
    onehot = F.one_hot(y, num_classes).to(a)
    mask = torch.ones(d, 1, dtype=a.dtype, device=a.device)
    mask[-1] = 0.0

    def grad(w: torch.Tensor) -> torch.Tensor:
        return a.T @ ((a @ w).softmax(dim=1) - onehot) / n + 2 * l2 * mask * w

    lipschitz = 0.5 * torch.linalg.eigvalsh(a.T @ a / n)[-1].item() + 2 * l2  # 0.5 + 2 l2 for whitened features
    w = torch.zeros(d, num_classes, dtype=a.dtype, device=a.device)
    v, momentum = w, 1.0
    for _ in range(max_iter):
        g = grad(v)
        w_next = v - g / lipschitz
        if (g * (w_next - w)).sum() > 0:  # moving uphill: restart the momentum
            momentum, v = 1.0, w_next
        else:
            m_next = (1 + math.sqrt(1 + 4 * momentum ** 2)) / 2
            v = w_next + ((momentum - 1) / m_next) * (w_next - w)
            momentum = m_next
        w = w_next
        if g.abs().max() < 1e-6:
            break
    return w


def probe_accuracy(train_x, train_y, test_x, test_y, num_classes: int, method: str = "logistic") -> float:
    predict = fit_linear_classifier(train_x, train_y, num_classes, method)
    return (predict(test_x).cpu() == test_y.cpu()).double().mean().item()


# ----------------------------------------------------------------------------------------------------------------
# The probe grid and its figure
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class ProbeResult:
    blocks: list[int]                     # token depths probed (0 = embedded patches, d = after block d)
    times: list[float]                    # t in [0, 1] (SiT scale; 0 = data)
    model_times: list                     # what the model saw: t (SiT) or the DDPM step (DiT)
    accuracy: list[list[float]]           # [block][time] test accuracy in [0, 1]
    process: str                          # the process the model was trained with ("flow", "ddpm", ...)
    time_axis: str                        # what model_times are, for plots
    classifier: str                       # "logistic" or "ridge"
    num_train: int
    num_test: int
    num_classes: int
    chance: float                         # frequency of the commonest test class
    seed: int

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def linear_probe(model, process, train_set, test_set, *, train_indices: torch.Tensor, test_indices: torch.Tensor,
                 blocks, times=DEFAULT_TIMES, classifier: str = "logistic", seed: int = 0,
                 batch_size: int = 256, device="cpu", progress: bool = True,
                 log: Callable[[str], object] | None = None) -> ProbeResult:
    """Test accuracy of a linear classifier on pooled tokens, for every (block, time) pair. Timesteps are the outer
    loop, so memory holds one timestep's features: (len(blocks), N, D) floats per split. With `log`, one line after
    the first batch estimates the time of all forward passes."""
    from tqdm.auto import tqdm

    blocks = sorted(set(blocks))
    acc = np.zeros((len(blocks), len(times)))
    total = len(times) * (len(train_indices) + len(test_indices))
    num_classes = None
    with tqdm(total=total, desc="probe", unit="img", disable=not progress) as bar:
        estimate = FirstBatchEstimate(total, "images", write=tqdm.write if progress else log,
                                      note="each image once per time; the classifier fits come on top") if log else None

        def on_batch(n: int) -> None:
            bar.update(n)
            if estimate is not None:
                estimate.done(n)

        for j, t in enumerate(times):
            kw = dict(seed=seed, batch_size=batch_size, device=device, on_batch=on_batch)
            ftr, ytr = pooled_features(model, process, train_set, train_indices, t, blocks, **kw)
            fte, yte = pooled_features(model, process, test_set, test_indices, t, blocks, **kw)
            num_classes = int(max(ytr.max(), yte.max())) + 1
            for i in range(len(blocks)):
                acc[i, j] = probe_accuracy(ftr[i].to(device), ytr.to(device), fte[i].to(device), yte, num_classes,
                                           classifier)
            bar.set_postfix(t=t, best=f"{acc[:, j].max():.3f}")
    chance = torch.bincount(yte, minlength=num_classes).max().item() / len(yte)
    return ProbeResult(blocks=blocks, times=[float(t) for t in times],
                       model_times=[process.model_time(t) for t in times], accuracy=acc.round(6).tolist(),
                       process=process.name, time_axis=process.time_axis, classifier=classifier, num_train=len(train_indices),
                       num_test=len(test_indices), num_classes=num_classes, chance=chance, seed=seed)


def plot_probe(result: ProbeResult, path: str | os.PathLike, title: str = "") -> tuple[int, int]:
    """Heat map, rows = blocks, columns = timesteps, each cell annotated with its accuracy in %. Returns the PNG's
    (width, height) in pixels: 220 + 80 per timestep by 110 + 34 per block, at 100 dpi."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = np.asarray(result.accuracy) * 100
    size = (220 + 80 * len(result.times), 110 + 34 * len(result.blocks))
    fig = plt.figure(figsize=(size[0] / 100, size[1] / 100), dpi=100)
    ax = fig.add_axes((130 / size[0], 50 / size[1], 1 - 210 / size[0], 1 - 90 / size[1]))
    im = ax.imshow(acc, cmap="viridis", vmin=100 * result.chance, vmax=100, aspect="auto")
    for i in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            dark = acc[i, j] < 100 * result.chance + 0.6 * (100 - 100 * result.chance)
            ax.text(j, i, f"{acc[i, j]:.1f}", ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xticks(range(len(result.times)), [f"{m:g}" for m in result.model_times], fontsize=8)
    ax.set_yticks(range(len(result.blocks)), ["embed" if b == 0 else f"block {b}" for b in result.blocks],
                  fontsize=8)
    ax.set_xlabel(result.time_axis, fontsize=8)
    ax.set_title(title or f"linear probe, test accuracy % ({result.classifier})", fontsize=9)
    cax = fig.add_axes((1 - 70 / size[0], 50 / size[1], 12 / size[0], 1 - 90 / size[1]))
    fig.colorbar(im, cax=cax).ax.tick_params(labelsize=7)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))  # never through a planted link
    finally:
        plt.close(fig)
    return size
