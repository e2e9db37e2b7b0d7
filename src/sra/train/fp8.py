"""An FP8 SRA teacher (`sra train --teacher-fp8`): the teacher is forward-only and its tokens are only a regression
target, so the linear layers of its blocks can run in FP8 (e4m3) with row-wise scales through `torch._scaled_mm`:
activations scaled per token at each call, weights cast once per EMA update (`refresh`, after `update_ema`), not per
forward. Everything else (embeddings, LayerNorms, attention's softmax, the adaLN arithmetic) stays as the bf16
teacher runs it.

Row-wise scaling: a matrix A (M, K) is stored as A8 = A / s_A with s_A (M, 1) = amax over its row / 448 (the largest
e4m3 value), so A ~ s_A * A8; then A W^T ~ (s_A s_W^T) * (A8 W8^T), which `_scaled_mm` computes with its float32
accumulation. Speed is a Hopper/Ada feature (FP8 tensor cores): elsewhere the flag is refused before anything is
written, while the numerics run on any device torch supports (`tests/test_fp8_teacher.py` checks them on the CPU).
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn

E4M3_MAX = 448.0  # torch.finfo(torch.float8_e4m3fn).max


def rowwise_fp8(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(A8 in float8_e4m3fn, scales (M, 1) in float32) of a 2-D matrix, each row scaled to the e4m3 range."""
    a = a.float()
    scale = (a.abs().amax(dim=1, keepdim=True) / E4M3_MAX).clamp_min(1e-12)
    return (a / scale).to(torch.float8_e4m3fn), scale


class Fp8Linear(nn.Module):
    """A frozen view of an nn.Linear whose matmul runs in FP8; `refresh` recasts the weight (after the EMA update)."""

    def __init__(self, source: nn.Linear):
        super().__init__()
        self.source = source  # shares the EMA's parameters: its bias is read as is
        self.casts = 0
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """Recast in place (the same tensors: a compiled teacher's graph stays valid)."""
        weight8, scale = rowwise_fp8(self.source.weight)  # (out, in), (out, 1)
        if hasattr(self, "weight8"):
            self.weight8.copy_(weight8)
            self.weight_scale.copy_(scale)
        else:
            self.weight8, self.weight_scale = weight8, scale
        self.casts += 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x8, x_scale = rowwise_fp8(x.reshape(-1, shape[-1]))
        out = torch._scaled_mm(x8, self.weight8.t(), scale_a=x_scale, scale_b=self.weight_scale.t(),
                               out_dtype=torch.bfloat16)
        if self.source.bias is not None:
            out = out + self.source.bias.to(out.dtype)
        return out.reshape(*shape[:-1], out.shape[-1])


class Fp8Teacher:
    """The teacher `module` (the EMA) with the linear layers of its first `depth` blocks in FP8. The mirror shares
    every parameter with `module` (no copy of the weights in full precision), so an in-place EMA update is seen by
    the parts that stay in bf16 at once and by the FP8 weights at the next `refresh`."""

    def __init__(self, module: nn.Module, depth: int):
        self.module, self.depth = module, depth
        shared = {id(p): p for p in module.parameters()} | {id(b): b for b in module.buffers()}
        self.mirror = copy.deepcopy(module, memo=shared)
        self.linears: list[Fp8Linear] = []
        found = [(parent, name, child) for block in self.mirror.blocks[:depth] for parent in block.modules()
                 for name, child in parent.named_children() if isinstance(child, nn.Linear)]
        for parent, name, child in found:  # (collected first: the FP8 view holds its Linear as a child)
            fp8 = Fp8Linear(child)
            setattr(parent, name, fp8)
            self.linears.append(fp8)

    def refresh(self) -> None:
        """Recast the FP8 weights from the teacher's current ones: once per EMA update."""
        for linear in self.linears:
            linear.refresh()

    def forward_features(self, x, t, y, depth: int, groups=None):
        if depth > self.depth:
            raise ValueError(f"the FP8 teacher holds {self.depth} blocks in FP8, asked for {depth}")
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            return self.mirror.forward_features(x, t, y, depth=depth, groups=groups)
