"""SiT (Ma et al. 2024, arXiv 2401.08740) as a diffusers ModelMixin, written out by `sra export --format diffusers`.

Self-contained (torch + diffusers): the same network and parameter names as sra's DiffusionTransformer (and the
released SiT/SRA checkpoints), without the training-only SRA head. Time convention: t in [0, 1], t = 0 data,
t = 1 noise, embedded as t itself; the model predicts the velocity of x_t = (1 - t) x0 + t eps (linear path) or the
cosine path named in the pipeline's config. Row `num_classes` of the label table is the null label of guidance.
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def timestep_frequencies(t, dim=256, max_period=10000.0):
    """cos then sin of t * exp(-ln(max_period) i / (dim / 2)), in float32 (DiT's and SiT's embedding)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def sincos_pos_embed_2d(dim, grid_size):
    """Fixed 2-D sin-cos position table (MAE convention): first half encodes the column, second the row."""
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))
    cols, rows = np.meshgrid(np.arange(grid_size, dtype=np.float32), np.arange(grid_size, dtype=np.float32))

    def encode(pos):
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([encode(cols), encode(rows)], axis=1)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(256, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t):
        return self.mlp(timestep_frequencies(t).to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    def __init__(self, num_classes, hidden_size, with_null):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + int(with_null), hidden_size)

    def forward(self, y):
        return self.embedding_table(y)


class PatchEmbed(nn.Module):
    def __init__(self, patch_size, in_channels, hidden_size):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, T, D)


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (N, H, T, D/H)
        return self.proj(x.transpose(1, 2).reshape(n, t, d))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    """adaLN-Zero block: the condition sets shift, scale and gate of attention and MLP."""

    def __init__(self, hidden_size, num_heads, mlp_hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, mlp_hidden)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x, c):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    def __init__(self, hidden_size, patch_size, out_channels):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x, c):
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class SiTTransformer2DModel(ModelMixin, ConfigMixin):
    """velocity = model(x (N, C, H, W), t (N,) in [0, 1], y (N,) labels; num_classes = the null label)."""

    @register_to_config
    def __init__(self, input_size=32, patch_size=2, in_channels=4, hidden_size=1152, depth=28, num_heads=16,
                 mlp_hidden_size=4608, num_classes=1000, class_dropout_prob=0.1):
        super().__init__()
        self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob > 0)
        grid = input_size // patch_size
        table = torch.from_numpy(sincos_pos_embed_2d(hidden_size, grid)).float()[None]
        self.pos_embed = nn.Parameter(table, requires_grad=False)  # a parameter, as in the released checkpoints
        self.blocks = nn.ModuleList([Block(hidden_size, num_heads, mlp_hidden_size) for _ in range(depth)])
        self.final_layer = FinalLayer(hidden_size, patch_size, in_channels)

    @property
    def num_classes(self):
        return self.config.num_classes

    def forward(self, x, t, y):
        p, c_out = self.config.patch_size, self.config.in_channels
        h = self.x_embedder(x) + self.pos_embed  # (N, T, D)
        c = self.t_embedder(t).to(h.dtype) + self.y_embedder(y)  # (N, D)
        for block in self.blocks:
            h = block(h, c)  # (N, T, D)
        h = self.final_layer(h, c)  # (N, T, p * p * C)
        n, tokens, _ = h.shape
        side = int(tokens ** 0.5)
        h = h.reshape(n, side, side, p, p, c_out)
        return torch.einsum("nhwpqc->nchpwq", h).reshape(n, c_out, side * p, side * p)  # (N, C, H, W)
