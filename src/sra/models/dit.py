"""The diffusion transformer shared by SiT and DiT (adaLN-Zero blocks), with the SRA projection head.

The backbone knows no time convention and no loss: it embeds whatever `t` it is given with a sinusoidal embedding
(SiT passes t in [0, 1], DiT passes integer steps 0..999). Parameter names follow the released SiT/DiT (+SRA)
checkpoints exactly, so their `ema` state dicts load strictly.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint


def per_token(v: torch.Tensor) -> torch.Tensor:
    """A per-sample condition (N, D) broadcast over tokens as (N, 1, D); a per-token one (N, T, D) as it is."""
    return v.unsqueeze(1) if v.ndim == 2 else v


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + per_token(scale)) + per_token(shift)


class TokenTimes(NamedTuple):
    """Per-token times kept once per token group: token i of image n has time values[n, index[n, i]]. The model gives
    the same result as for the per-token tensor `values.gather(1, index)`, but embeds the time and runs each adaLN
    layer once per (image, group) instead of once per token: per-token adaLN costs 6 D^2 per token and block, half
    of the block's own matmuls (12 D^2), so this is what makes dual-timestep training cheap."""
    values: torch.Tensor  # (N, K) one time per group
    index: torch.Tensor   # (N, T) int64 in [0, K): each token's group

    def per_token(self) -> torch.Tensor:
        return self.values.gather(1, self.index)  # (N, T)


def modulation(layer: nn.Module, c: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """adaLN parameters: layer(c) for c (N, D) or (N, T, D); with `index` (N, T), c is (N, K, D), one row per group,
    and the K rows are spread to the tokens after the layer."""
    m = layer(c)
    return m if index is None else m.gather(1, index[..., None].expand(-1, -1, m.shape[-1]))  # (N, T, M)


def group_attention_mask(groups: torch.Tensor) -> torch.Tensor:
    """Group ids (N, T) -> boolean mask (N, 1, T, T), True where query and key tokens share a group."""
    return (groups[:, :, None] == groups[:, None, :])[:, None]


# ----------------------------------------------------------------------------------------------------------------
# Embeddings
# ----------------------------------------------------------------------------------------------------------------

def timestep_frequencies(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) times, cos half first then sin half; computed in float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freq = timestep_frequencies(t, self.frequency_embedding_size)
        return self.mlp(freq.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class embedding; row `num_classes` is the null label used for classifier-free guidance."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float):
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(y)


class PatchEmbed(nn.Module):
    def __init__(self, input_size: int, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.num_patches = (input_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, T, D)


def sincos_pos_embed_2d(dim: int, grid_size: int) -> np.ndarray:
    """Fixed 2-D sin-cos position embedding (MAE convention): first half encodes the column, second the row."""
    assert dim % 4 == 0, "hidden size must be divisible by 4 for the 2-D sin-cos embedding"
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))
    cols, rows = np.meshgrid(np.arange(grid_size, dtype=np.float32), np.arange(grid_size, dtype=np.float32))

    def encode(pos):
        out = np.outer(pos.reshape(-1), omega)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)

    return np.concatenate([encode(cols), encode(rows)], axis=1)  # (grid_size**2, dim)


# ----------------------------------------------------------------------------------------------------------------
# Transformer block
# ----------------------------------------------------------------------------------------------------------------

class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        assert dim % num_heads == 0, f"hidden size {dim} is not divisible by {num_heads} heads"
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """`mask` (N, 1, T, T) bool: attend only where True (attention separation); None: full attention."""
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        if mask is None:  # the unmasked call stays exactly as it was (fastest SDPA kernels)
            x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (N, H, T, D/H)
        else:
            x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask)  # (N, H, T, D/H)
        return self.proj(x.transpose(1, 2).reshape(n, t, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class Block(nn.Module):
    """adaLN-Zero transformer block: the condition sets shift, scale and gate of attention and MLP."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor, mask: torch.Tensor | None = None,
                index: torch.Tensor | None = None) -> torch.Tensor:
        """x (N, T, D); c (N, D) per sample, (N, T, D) per token, or (N, K, D) per group with `index` (N, T) (see
        `modulation`); mask as in Attention."""
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = modulation(
            self.adaLN_modulation, c, index).chunk(6, dim=-1)
        x = x + per_token(gate_msa) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa), mask)
        x = x + per_token(gate_mlp) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        return x


class FinalLayer(nn.Module):
    def __init__(self, hidden_size: int, patch_size: int, out_channels: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        shift, scale = modulation(self.adaLN_modulation, c, index).chunk(2, dim=-1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class ProjectionHead(nn.Module):
    """SRA head on the student tokens: Linear(D, 2D) -> SiLU -> Linear(2D, D). Used in training only."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.linear1 = nn.Linear(hidden_size, 2 * hidden_size)
        self.linear2 = nn.Linear(2 * hidden_size, hidden_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.linear2(F.silu(self.linear1(h)))


# ----------------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------------

class DiffusionTransformer(nn.Module):
    """SiT / DiT backbone. `learn_sigma` doubles the output channels (DiT's learned variance). The SRA head
    `ap_head` is part of it because the released SiT-SRA / DiT-SRA checkpoints hold it (they load strictly); every
    other training-only module belongs to its term (sra.objectives)."""

    def __init__(
        self,
        *,
        input_size: int = 32,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        class_dropout_prob: float = 0.1,
        num_classes: int = 1000,
        learn_sigma: bool = False,
    ):
        super().__init__()
        if input_size % patch_size:
            raise ValueError(f"input size {input_size} is not divisible by patch size {patch_size}")
        self.input_size, self.patch_size, self.in_channels = input_size, patch_size, in_channels
        self.hidden_size, self.depth, self.num_heads = hidden_size, depth, num_heads
        self.num_classes, self.learn_sigma = num_classes, learn_sigma
        self.out_channels = in_channels * 2 if learn_sigma else in_channels
        self.grad_checkpointing = False  # recompute block activations in backward (set by the trainer)

        self.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
        num_patches = self.x_embedder.num_patches
        # A frozen parameter (not a buffer) so that the released checkpoints' `pos_embed` key matches.
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, hidden_size), requires_grad=False)
        self.blocks = nn.ModuleList([Block(hidden_size, num_heads, mlp_ratio) for _ in range(depth)])
        self.ap_head = ProjectionHead(hidden_size)
        self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """All initialisation in one place (DiT recipe: xavier linears, adaLN-Zero, zero output layer)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        grid = int(self.x_embedder.num_patches ** 0.5)
        self.pos_embed.data.copy_(torch.from_numpy(sincos_pos_embed_2d(self.hidden_size, grid)).float()[None])
        w = self.x_embedder.proj.weight.data
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN_modulation[-1].weight)
            nn.init.zeros_(block.adaLN_modulation[-1].bias)
        for p in (self.final_layer.adaLN_modulation[-1].weight, self.final_layer.adaLN_modulation[-1].bias,
                  self.final_layer.linear.weight, self.final_layer.linear.bias):
            nn.init.zeros_(p)

    # -- pieces ----------------------------------------------------------------------------------------------------

    def embed(self, x: torch.Tensor, t, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Tokens before the first block, the condition and its token index: (N, D) for times t (N,); (N, T, D) for
        one time per token, t (N, T) (dual-timestep scheduling: adaLN then modulates each token by its own time);
        (N, K, D) and the (N, T) index for `TokenTimes`. Labels are used as given (no dropout here)."""
        tokens = self.x_embedder(x) + self.pos_embed  # (N, T, D)
        index = None
        if isinstance(t, TokenTimes):
            if t.index.shape != tokens.shape[:2] or t.values.shape[0] != tokens.shape[0]:
                raise ValueError(f"token times have index {tuple(t.index.shape)} and values {tuple(t.values.shape)}, "
                                 f"expected index {tuple(tokens.shape[:2])} and values ({tokens.shape[0]}, K)")
            t, index = t.values, t.index
        elif t.ndim == 0:
            t = t.expand(x.shape[0])
        elif t.ndim == 2 and t.shape != tokens.shape[:2]:
            raise ValueError(f"per-token times have shape {tuple(t.shape)}, expected {tuple(tokens.shape[:2])}")
        if t.ndim == 2:  # one time per token (N, T), or per group (N, K) spread by `index`
            t_emb = self.t_embedder(t.reshape(-1)).reshape(*t.shape, -1)  # (N, T or K, D)
            return tokens, t_emb.to(tokens.dtype) + self.y_embedder(y)[:, None], index
        c = self.t_embedder(t).to(tokens.dtype) + self.y_embedder(y)  # (N, D)
        return tokens, c, None

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        n, t, _ = x.shape
        p, c, h = self.patch_size, self.out_channels, int(t ** 0.5)
        x = x.reshape(n, h, h, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(n, c, h * p, h * p)

    # -- public API -------------------------------------------------------------------------------------------------

    def forward_features(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, depth: int,
                         groups: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens (N, T, D) after the first `depth` blocks; the later blocks do not run. t and groups as in forward."""
        if not 0 <= depth <= self.depth:
            raise ValueError(f"depth {depth} outside 0..{self.depth}")
        h, c, index = self.embed(x, t, y)
        mask = None if groups is None else group_attention_mask(groups)
        for block in self.blocks[:depth]:
            h = block(h, c, mask, index)
        return h

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor,
                feature_depth: int | tuple[int, ...] | None = None, groups: torch.Tensor | None = None):
        """Prediction (N, C_out, H, W) for inputs x (N, C, H, W), times t (N,), one per token (N, T) or `TokenTimes`
        (one per token group, the same result as per token, cheaper), and labels y (N,) used as given. `groups` (N, T) integer group ids restrict attention to tokens of the same group
        (attention separation); None is the ordinary full attention.

        With `feature_depth=k` also return the tokens (N, T, D) after block k from the same forward, as a tuple; the
        training objective asks for them this way so that DDP and torch.compile see a single forward call. A tuple of
        depths returns a tuple of token tensors, one per depth, in its order.
        """
        h, c, index = self.embed(x, t, y)
        mask = None if groups is None else group_attention_mask(groups)
        depths = feature_depth if isinstance(feature_depth, tuple) else (feature_depth,)
        feats = {0: h} if 0 in depths else {}
        ckpt = self.grad_checkpointing and torch.is_grad_enabled()
        for i, block in enumerate(self.blocks):
            if ckpt:
                h = torch.utils.checkpoint.checkpoint(block, h, c, mask, index, use_reentrant=False)  # (N, T, D)
            else:
                h = block(h, c, mask, index)  # (N, T, D)
            if i + 1 in depths:
                feats[i + 1] = h
        out = self.unpatchify(self.final_layer(h, c, index))  # (N, C_out, H, W)
        if feature_depth is None:
            return out
        return out, (tuple(feats.get(d) for d in depths) if isinstance(feature_depth, tuple) else feats.get(feature_depth))
