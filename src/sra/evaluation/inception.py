"""The FID Inception network: TensorFlow's inception-2015-12-05 graph (the one FID, sFID, IS and the ADM suite use), in
the layout of pytorch-fid's port so that its weight file `pt_inception-2015-12-05-6726825d.pth` loads strictly.

The TF graph differs from torchvision's Inception-v3 in three places, reproduced here:
- the 3x3 average pools inside the A, C and first E blocks exclude the zero padding (count_include_pad=False);
- the last E block (Mixed_7c) pools with a 3x3 *max* pool in its pool branch;
- the classifier is 1008-way (fc: 2048 -> 1008).
Module and parameter names follow torchvision's Inception3 (Conv2d_1a_3x3.conv.weight,
Mixed_7c.branch_pool.bn.running_var, fc.weight ...), the names of pytorch-fid's file. Nothing is downloaded: the
file must be on disk.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..checkpoint import unreadable_reason

WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_NAME
POOL_DIM, SPATIAL_CHANNELS, NUM_LOGITS = 2048, 7, 1008
SPATIAL_DIM = SPATIAL_CHANNELS * 17 * 17


def default_weights_path() -> Path:
    """$TORCH_HOME/hub/checkpoints/<file> (torch's hub folder: ~/.cache/torch/hub unless TORCH_HOME/XDG_CACHE_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_NAME


# ----------------------------------------------------------------------------------------------------------------
# Building blocks (names as in torchvision's Inception3, so that state-dict keys match)
# ----------------------------------------------------------------------------------------------------------------

class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 1e-3, TF's value) -> ReLU."""

    def __init__(self, cin: int, cout: int, **conv_kwargs):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, bias=False, **conv_kwargs)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def resize_bilinear_tf1(x: torch.Tensor, size: int) -> torch.Tensor:
    """TF 1.x ResizeBilinear with align_corners=False and no half-pixel centres (the op inside the 2015 graph, which
    ADM's evaluator feeds): output pixel i samples the input at i * in / out, clamped at the last row/column."""
    def axis(n_in):
        src = torch.arange(size, dtype=torch.float64, device=x.device) * (n_in / size)
        lo = src.floor().long().clamp_(max=n_in - 1)
        return lo, (lo + 1).clamp_(max=n_in - 1), (src - lo).to(x.dtype)

    y0, y1, fy = axis(x.shape[-2])
    x0, x1, fx = axis(x.shape[-1])
    rows = x[..., y0, :] + (x[..., y1, :] - x[..., y0, :]) * fy[:, None]          # (N, C, size, W)
    return rows[..., x0] + (rows[..., x1] - rows[..., x0]) * fx                    # (N, C, size, size)


def tf_avg_pool(x):
    """TF's 3x3/1 SAME average pool: the padded zeros are not counted in the mean."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):  # Mixed_5b..5d, 35x35
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(cin, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(tf_avg_pool(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):  # Mixed_6a: 35x35 -> 17x17
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, bd, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionC(nn.Module):  # Mixed_6b..6e, 17x17, factorised 7x7
    def __init__(self, cin: int, channels_7x7: int):
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)  # first 192 output channels: TF's mixed_N/conv
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            bd = layer(bd)
        bp = self.branch_pool(tf_avg_pool(x))
        return torch.cat([b1, b7, bd, bp], 1)


class InceptionD(nn.Module):  # Mixed_7a: 17x17 -> 8x8
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x):
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):  # Mixed_7b (average pool branch), Mixed_7c (max pool branch: the TF graph's quirk)
    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(cin, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(cin, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, kernel_size=1)

    def forward(self, x):
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else tf_avg_pool(x)
        return torch.cat([b1, b3, bd, self.branch_pool(pooled)], 1)


# ----------------------------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------------------------

class InceptionV3Features(nn.Module):
    """FID Inception-v3. `net(images)` -> (N, 2048) pool features; `net.features(images)` -> all three outputs.

    images: float (N, 3, H, W) in [0, 1] (1 channel is repeated to 3). Preprocessing is pytorch-fid's: bilinear resize
    to 299x299 (align_corners=False, no antialiasing), then 2x - 1 to [-1, 1].
    weights_path: pytorch-fid's file; None looks in $TORCH_HOME/hub/checkpoints/. pretrained=False keeps the random
    initialisation (tests only).
    preprocess: "pytorch-fid" (default) or "adm": the input path of the TF graph that ADM's evaluator feeds (TF 1.x
    bilinear resize without half-pixel centres on [0, 255] values, then (x - 128) / 128). See docs/EVALUATION.md.
    """

    PREPROCESSING = ("pytorch-fid", "adm")

    def __init__(self, weights_path: str | os.PathLike | None = None, *, pretrained: bool = True,
                 preprocess: str = "pytorch-fid"):
        super().__init__()
        if preprocess not in self.PREPROCESSING:
            raise ValueError(f"preprocess must be one of {', '.join(self.PREPROCESSING)}, got {preprocess!r}")
        self.preprocessing = preprocess
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(POOL_DIM, NUM_LOGITS)
        self.weights_path = None
        if pretrained:
            self.weights_path = Path(weights_path) if weights_path is not None else default_weights_path()
            self.load_weights(self.weights_path)
        self.eval().requires_grad_(False)

    def load_weights(self, path: Path) -> None:
        """Load pytorch-fid's state dict strictly: every parameter and running statistic, with its shape."""
        if not path.is_file():
            default = default_weights_path()  # offered as a second place only when it is another one
            other = "" if path.resolve() == default.resolve() else f"in {default.parent}/, or "
            raise FileNotFoundError(
                f"FID Inception weights not found at {path}: download {WEIGHTS_URL} on a machine with internet and "
                f"put it there (or {other}pass --inception-weights PATH)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # torch's pickle-protocol notes about foreign files
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # in plain words: never torch's advice to unpickle the file unsafely
            raise ValueError(f"cannot read Inception weights {path}: {unreadable_reason(e)}") from None
        if not isinstance(state, dict):
            raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
        own = self.state_dict()
        # BatchNorm's num_batches_tracked counters are bookkeeping, not weights; older files lack them.
        required = [k for k in own if not k.endswith("num_batches_tracked")]
        missing = [k for k in required if k not in state]
        unexpected = [k for k in state if k not in own]
        if missing or unexpected:
            raise ValueError(f"{path} is not pytorch-fid's FID Inception state dict ({len(missing)} missing keys"
                             f"{', e.g. ' + missing[0] if missing else ''}; {len(unexpected)} unexpected"
                             f"{', e.g. ' + unexpected[0] if unexpected else ''})")
        for k in required:
            if tuple(state[k].shape) != tuple(own[k].shape):
                raise ValueError(f"{path}: {k} has shape {tuple(state[k].shape)}, expected {tuple(own[k].shape)} "
                                 "(not the FID Inception weights)")
        self.load_state_dict({k: state.get(k, own[k]) for k in own}, strict=True)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] (N, C, H, W) -> about [-1, 1] (N, 3, 299, 299), as pytorch-fid (or the ADM graph) does."""
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected images (N, 3, H, W) or (N, 1, H, W), got {tuple(images.shape)}")
        x = images.float()
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.preprocessing == "adm":
            return (resize_bilinear_tf1(x * 255, 299) - 128) / 128
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return 2 * x - 1

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """{'pool': (N, 2048) FID features, 'spatial': (N, 2023) sFID features, 'logits': (N, 1008) IS logits}.

        spatial: the first 7 channels of TF's `mixed_6/conv` (ADM's sFID tensor). TF names the eleven mixed blocks
        mixed, mixed_1 .. mixed_10, so mixed_6 is Mixed_6d here, and its `conv` is the 1x1 branch, which is the first
        192 channels of Mixed_6d's output; flattened channel-last as ADM does (17 x 17 x 7).
        logits: pool @ fc.weight^T *without* the bias, as the original Inception-Score code and ADM compute them
        (they rebuild the softmax from the weights of `softmax/logits/MatMul`).
        """
        # TF32 convolutions (the CUDA default) would perturb features at the 1e-3 level; keep full float32.
        with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
            x = self.preprocess(images.to(self.fc.weight.device))   # (N, 3, 299, 299)
            x = self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))           # (N, 32, 147, 147)
            x = self.Conv2d_2b_3x3(x)                               # (N, 64, 147, 147)
            x = F.max_pool2d(x, kernel_size=3, stride=2)            # (N, 64, 73, 73)
            x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))           # (N, 192, 71, 71)
            x = F.max_pool2d(x, kernel_size=3, stride=2)            # (N, 192, 35, 35)
            x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))      # (N, 288, 35, 35)
            x = self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(x)))      # (N, 768, 17, 17)
            x = self.Mixed_6d(x)                                    # (N, 768, 17, 17)
            spatial = x[:, :SPATIAL_CHANNELS].permute(0, 2, 3, 1).flatten(1)  # (N, 17 * 17 * 7)
            x = self.Mixed_7a(self.Mixed_6e(x))                     # (N, 1280, 8, 8)
            x = self.Mixed_7c(self.Mixed_7b(x))                     # (N, 2048, 8, 8)
            pool = x.mean(dim=(2, 3))                               # (N, 2048)
            logits = pool @ self.fc.weight.T                        # (N, 1008)
        return {"pool": pool, "spatial": spatial, "logits": logits}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)["pool"]
