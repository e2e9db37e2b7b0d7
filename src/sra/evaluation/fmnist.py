"""FD-FMNIST: the small-data metric for Fashion-MNIST, where no Inception weights can be had.

A small CNN classifier is trained by the project itself on the training split (a few minutes on a CPU) and cached in
the user cache folder ($XDG_CACHE_HOME/sra or ~/.cache/sra) under a hash of its architecture and recipe. Two scores:
- fd_fmnist: Fréchet distance between the classifier's 128-d penultimate features of the samples and of the 10 000
  test images (the FID recipe with a domain-specific feature extractor);
- class_acc: accuracy of the classifier on the samples against their conditioning labels (are classes honoured?).
Samples are quantised to uint8 first, so scoring a model in memory equals scoring its saved .npz.

Two classifiers are defined (CLASSIFIERS): "cnn", the default and the one `--repa-encoder fmnist` aligns to, and
"resnet", another architecture (strided convolutions, residual blocks, GELU, global average pooling) trained from
another seed. A run trained towards the cnn's features is scored fairly only by the resnet's.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.grid import to_uint8
from .metrics import frechet_distance, gaussian_stats

FEATURE_DIM = 128


@dataclass(frozen=True)
class ClassifierRecipe:
    epochs: int = 4                 # passes over the 60 000 training images
    batch_size: int = 128           # images per step
    lr: float = 3e-3                # AdamW peak learning rate (one-cycle: warm-up then cosine decay)
    weight_decay: float = 5e-4      # AdamW weight decay
    hflip: bool = True              # random horizontal flips (garments are left-right symmetric)
    seed: int = 0                   # initialisation and data order


class FMNISTClassifier(nn.Module):
    """A LeNet-sized CNN with batch norm (28 -> 14 -> 7) and a 128-d embedding; input (N, 1, 28, 28) in [-1, 1].
    Kept small on purpose: ~4.6 M multiply-adds per image, so that training takes minutes on a laptop CPU."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 5, padding=2, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),  # 32x14x14
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),  # 64x7x7
            nn.Flatten(), nn.Linear(64 * 7 * 7, FEATURE_DIM), nn.ReLU())                                   # (N, 128)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)                                  # (N, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))        # (N, 10)


class FMNISTResNet(nn.Module):
    """The independent second classifier: no layer shared with FMNISTClassifier's design. Strided convolutions
    (28 -> 14 -> 7), two residual blocks at 7x7, GELU, global average pooling, then a 128-d embedding (~4.6 M
    multiply-adds per image, as the cnn)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()

        def conv(cin, cout, k, stride):
            return [nn.Conv2d(cin, cout, k, stride=stride, padding=(k - 1) // 2, bias=False), nn.BatchNorm2d(cout)]

        self.stem = nn.Sequential(*conv(1, 32, 4, 2), nn.GELU(), *conv(32, 64, 3, 2), nn.GELU())  # 64x7x7
        self.blocks = nn.ModuleList(nn.Sequential(*conv(64, 64, 3, 1), nn.GELU(), *conv(64, 64, 3, 1))
                                    for _ in range(2))
        self.proj = nn.Sequential(nn.Linear(64, FEATURE_DIM), nn.GELU())
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2:                                  # 28 -> 14 with a 4x4 stride-2 kernel needs an even side
            raise ValueError(f"FMNISTResNet needs an even image side, got {x.shape[-1]}")
        h = self.stem(F.pad(x, (1, 1, 1, 1), value=-1.0))    # pad with black: (30 - 4) / 2 + 1 = 14
        for block in self.blocks:
            h = F.gelu(h + block(h))
        return self.proj(h.mean((-2, -1)))                   # (N, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))        # (N, 10)


# name -> (architecture, recipe). "cnn" is the default metric and REPA's fmnist encoder; "resnet" differs in
# architecture and seed, so that runs aligned to the cnn's features can be scored by features they never saw.
CLASSIFIERS: dict[str, tuple[type[nn.Module], ClassifierRecipe]] = {
    "cnn": (FMNISTClassifier, ClassifierRecipe()),
    "resnet": (FMNISTResNet, ClassifierRecipe(seed=1)),
}


def classifier_spec(name: str) -> tuple[type[nn.Module], ClassifierRecipe]:
    if name not in CLASSIFIERS:
        raise ValueError(f"unknown FD-FMNIST classifier {name!r}; choose from {', '.join(CLASSIFIERS)}")
    return CLASSIFIERS[name]


# ----------------------------------------------------------------------------------------------------------------
# Input conversion
# ----------------------------------------------------------------------------------------------------------------

def to_classifier_input(images) -> torch.Tensor:
    """Samples -> float (N, 1, 28, 28) in [-1, 1], quantised to the 256 uint8 levels.

    Accepts uint8 [0, 255] or float [-1, 1]; (N, H, W), (N, H, W, C) or (N, C, H, W) with C in {1, 3} (RGB is
    averaged); 28x28, or 32x32 (our padded training size: the 2-pixel border is cropped)."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images).detach().cpu()
    is_uint8 = x.dtype == torch.uint8
    if not is_uint8 and not x.is_floating_point():
        raise ValueError(f"samples must be uint8 [0, 255] or float [-1, 1], got {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.permute(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"samples must be (N, H, W), (N, H, W, C) or (N, C, H, W) with C = 1 or 3; "
                         f"got {tuple(x.shape)}")
    x = x.float()
    x = x / 127.5 - 1.0 if is_uint8 else ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1.0
    x = x.mean(1, keepdim=True)
    size = x.shape[-1]
    if x.shape[-2] != size or size not in (28, 32):
        raise ValueError(f"Fashion-MNIST samples must be 28x28 or 32x32, got {x.shape[-2]}x{size}")
    if size == 32:
        x = x[..., 2:30, 2:30]
    return x.contiguous()


# ----------------------------------------------------------------------------------------------------------------
# Training (cached)
# ----------------------------------------------------------------------------------------------------------------

def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sra"


def recipe_key(recipe: ClassifierRecipe, arch: type[nn.Module] = FMNISTClassifier) -> str:
    """Hash of the architecture (its module tree, which lists every layer's shape) and the recipe."""
    text = repr(arch()) + json.dumps(asdict(recipe), sort_keys=True) + "fmnist-v1"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def train_classifier(images: np.ndarray, labels: np.ndarray, recipe: ClassifierRecipe = ClassifierRecipe(),
                     device="cpu", progress: bool = True, arch: type[nn.Module] = FMNISTClassifier) -> nn.Module:
    """Train on uint8 (N, 28, 28) images with int labels; returns the model in eval mode."""
    from tqdm.auto import tqdm

    torch.manual_seed(recipe.seed)
    x = to_classifier_input(images)
    y = torch.as_tensor(labels).long()
    model = arch().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = max(1, len(x) // recipe.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(recipe.seed)
    model.train()
    bar = tqdm(total=recipe.epochs * steps_per_epoch, desc="FD-FMNIST classifier", unit="step", disable=not progress,
               dynamic_ncols=True)
    for _ in range(recipe.epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(steps_per_epoch):
            idx = perm[i * recipe.batch_size:(i + 1) * recipe.batch_size]
            xb, yb = x[idx], y[idx]
            if recipe.hflip:
                flip = torch.rand(len(xb), generator=gen) < 0.5
                xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            loss = F.cross_entropy(model(xb.to(device)), yb.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    return model.eval()


@torch.no_grad()
def embed_and_predict(model: nn.Module, images, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """(128-d features float64, predicted labels) of samples in any format `to_classifier_input` accepts."""
    x = to_classifier_input(images)
    device = next(model.parameters()).device
    feats, preds = [], []
    for i in range(0, len(x), batch_size):
        f = model.embed(x[i:i + batch_size].to(device))
        feats.append(f.double().cpu())
        preds.append(model.head(f).argmax(1).cpu())
    return torch.cat(feats), torch.cat(preds)


@dataclass
class FMNISTScorer:
    """The trained classifier with the test-split statistics it is compared against."""
    model: nn.Module                 # FMNISTClassifier or FMNISTResNet
    ref_mu: np.ndarray               # (128,) test-split feature mean
    ref_sigma: np.ndarray            # (128, 128) test-split feature covariance
    test_accuracy: float             # classifier accuracy on the 10 000 test images
    info: dict                       # recipe, key, training time, cache file


_LOADED: dict[tuple[str, str], FMNISTScorer] = {}


def classifier_blob(train_x, train_y, test_x, test_y, recipe: ClassifierRecipe = ClassifierRecipe(), device="cpu",
                    progress: bool = True, arch: type[nn.Module] = FMNISTClassifier) -> dict:
    """Train, then measure on the test images: weights, test-feature statistics, accuracy (the cache file's content)."""
    t0 = time.perf_counter()
    model = train_classifier(train_x, train_y, recipe, device, progress, arch)
    seconds = time.perf_counter() - t0
    feats, preds = embed_and_predict(model, test_x)
    mu, sigma = gaussian_stats(feats)
    return {"state": {k: v.cpu() for k, v in model.state_dict().items()}, "ref_mu": torch.from_numpy(mu),
            "ref_sigma": torch.from_numpy(sigma), "train_seconds": seconds, "recipe": asdict(recipe),
            "key": recipe_key(recipe, arch), "num_train": len(train_x), "num_test": len(test_x),
            "test_accuracy": float((preds == torch.as_tensor(np.asarray(test_y)).long()).float().mean())}


def cache_file(classifier: str, key: str) -> Path:
    """fmnist-classifier-<key>.pt for the cnn (the name it always had), fmnist-<name>-classifier-<key>.pt else."""
    return cache_dir() / f"fmnist-{'' if classifier == 'cnn' else classifier + '-'}classifier-{key}.pt"


def _read_cached(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None  # truncated or foreign: retrain and overwrite


def fmnist_scorer(device="cpu", recipe: ClassifierRecipe | None = None, data_root=None,
                  progress: bool = True, classifier: str = "cnn") -> FMNISTScorer:
    """The cached classifier (trained on first use, a few minutes on a CPU) and its test statistics.
    classifier: a name in CLASSIFIERS; recipe: overrides that classifier's recipe."""
    from ..data.pixels import load_fashion_mnist

    arch, default_recipe = classifier_spec(classifier)
    recipe = recipe or default_recipe
    key = recipe_key(recipe, arch)
    if (key, str(device)) in _LOADED:
        return _LOADED[(key, str(device))]
    path = cache_file(classifier, key)
    blob = _read_cached(path)
    if blob is None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "w") as lock:
            # One trainer per machine: concurrent processes (test workers, study jobs) wait for its file instead of
            # each spending minutes training the same classifier.
            fcntl.flock(lock, fcntl.LOCK_EX)
            blob = _read_cached(path)
            if blob is None:
                print(f"training the FD-FMNIST {classifier} classifier once (cached in {path}) ...", flush=True)
                blob = classifier_blob(*load_fashion_mnist(data_root, "train"),
                                       *load_fashion_mnist(data_root, "test"), recipe, device, progress, arch)
                tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
                torch.save(blob, tmp)
                os.replace(tmp, path)  # atomic: a reader never sees a half-written file
                print(f"FD-FMNIST classifier: test accuracy {blob['test_accuracy']:.4f}, trained in "
                      f"{blob['train_seconds']:.0f} s", flush=True)
    model = arch()
    model.load_state_dict(blob["state"])
    scorer = FMNISTScorer(model.to(device).eval(), blob["ref_mu"].numpy(), blob["ref_sigma"].numpy(),
                          float(blob["test_accuracy"]),
                          {"name": classifier, "key": key, "recipe": blob["recipe"], "train_seconds": float(blob["train_seconds"]),
                           "cache_file": str(path)})
    _LOADED[(key, str(device))] = scorer
    return scorer


def cached_fmnist_scorer(device="cpu", classifier: str = "cnn") -> FMNISTScorer | None:
    """The classifier when it is already cached, else None (nothing is trained: callers that only report)."""
    arch, recipe = classifier_spec(classifier)
    key = recipe_key(recipe, arch)
    if (key, str(device)) not in _LOADED and _read_cached(cache_file(classifier, key)) is None:
        return None
    return fmnist_scorer(device, progress=False, classifier=classifier)


def fmnist_scores(images, labels=None, scorer: FMNISTScorer | None = None, device="cpu") -> dict[str, float]:
    """{'fd_fmnist', 'class_acc' (when labels are given), 'num_samples'} of Fashion-MNIST samples.

    images: float (N, 1, 32, 32) / (N, 1, 28, 28) in [-1, 1], or uint8 (N, 28, 28) / (N, 32, 32[, C]).
    labels: the conditioning class of each sample, or None."""
    scorer = scorer or fmnist_scorer(device)
    feats, preds = embed_and_predict(scorer.model, images)
    mu, sigma = gaussian_stats(feats)
    out = {"fd_fmnist": frechet_distance(mu, sigma, scorer.ref_mu, scorer.ref_sigma), "num_samples": len(feats)}
    if labels is not None:
        labels = torch.as_tensor(np.asarray(labels)).long().flatten()
        if len(labels) != len(preds):
            raise ValueError(f"{len(labels)} labels for {len(preds)} samples")
        out["class_acc"] = float((preds == labels).float().mean())
    return out


# ----------------------------------------------------------------------------------------------------------------
# Sampling a model and scoring it
# ----------------------------------------------------------------------------------------------------------------

@torch.no_grad()
def generate_samples(model, process, num_samples: int, device, seed: int = 0, num_steps: int = 30,
                     batch_size: int = 250) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (N, H, W, C) samples and their labels from a class-conditional pixel model: balanced classes
    (i mod num_classes), noise drawn once from `seed` (independent of the batch size), the process's own grid sampler
    (Euler ODE for SiT, DDIM for DiT: the process the model was trained with), no guidance."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    shape = (model.in_channels, model.input_size, model.input_size)
    labels = torch.arange(num_samples) % model.num_classes
    noise = torch.randn((num_samples, *shape), generator=torch.Generator().manual_seed(seed))
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, num_samples, batch_size):
            z, y = noise[i:i + batch_size].to(device), labels[i:i + batch_size].to(device)
            x = process.grid_sample(model, z, y, num_steps)
            out.append(torch.from_numpy(to_uint8(x, "nearest")))
    finally:
        model.train(was_training)
    return torch.cat(out).numpy(), labels.numpy()


def evaluate_fmnist_for_training(ema_model, process, num_samples: int = 1000, device="cpu", seed: int = 0,
                                 num_steps: int = 30) -> dict[str, float]:
    """FD-FMNIST and class accuracy of `num_samples` samples from a model (e.g. the EMA during training).
    The classifier is trained and cached on the first call; later calls cost only the sampling."""
    if ema_model.in_channels != 1 or ema_model.input_size not in (28, 32):
        raise ValueError(f"FD-FMNIST needs a 1-channel 28x28 or 32x32 pixel model; this one is "
                         f"{ema_model.in_channels}x{ema_model.input_size}x{ema_model.input_size}")
    scorer = fmnist_scorer(device)
    images, labels = generate_samples(ema_model, process, num_samples, device, seed, num_steps)
    return fmnist_scores(images, labels, scorer=scorer)
