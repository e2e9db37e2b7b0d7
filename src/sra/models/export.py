"""Hand trained weights to other tools: safetensors (EMA weights + a JSON config that `load_model` reads back) and,
for DiT models, diffusers' DiTTransformer2DModel layout."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from .dit import DiffusionTransformer
from .loading import LoadedModel

SAFETENSORS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


def architecture(model: DiffusionTransformer) -> dict:
    """Constructor arguments that rebuild `model` exactly (num_heads included, which shapes cannot tell)."""
    mlp_hidden = model.blocks[0].mlp.fc1.out_features
    return dict(input_size=model.input_size, patch_size=model.patch_size, in_channels=model.in_channels,
                hidden_size=model.hidden_size, depth=model.depth, num_heads=model.num_heads,
                mlp_ratio=mlp_hidden / model.hidden_size, num_classes=model.num_classes,
                class_dropout_prob=model.y_embedder.dropout_prob, learn_sigma=model.learn_sigma)


def export_safetensors(loaded: LoadedModel, output: str | os.PathLike) -> Path:
    """OUTPUT/model.safetensors (the loaded weights, EMA by default; the config also in its metadata) and
    OUTPUT/config.json ({format, family, architecture, step, train_config})."""
    from safetensors.torch import save_file

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    config = {"format": "sra", "family": loaded.family, "architecture": architecture(loaded.model),
              "step": loaded.step, "train_config": loaded.config}
    state = {k: v.detach().contiguous().cpu() for k, v in loaded.model.state_dict().items()}
    save_file(state, str(output / SAFETENSORS_NAME), metadata={"sra_config": json.dumps(config)})
    (output / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return output


# ----------------------------------------------------------------------------------------------------------------
# diffusers (DiT only)
# ----------------------------------------------------------------------------------------------------------------

def diffusers_config(model: DiffusionTransformer) -> dict:
    if not model.learn_sigma:
        raise ValueError("diffusers has no SiT (flow) transformer; export SiT models with --format safetensors")
    if model.blocks[0].mlp.fc1.out_features != 4 * model.hidden_size:
        raise ValueError("diffusers' DiT has MLP ratio 4; this model's differs")
    return dict(num_attention_heads=model.num_heads, attention_head_dim=model.hidden_size // model.num_heads,
                in_channels=model.in_channels, out_channels=model.out_channels, num_layers=model.depth,
                sample_size=model.input_size, patch_size=model.patch_size, num_embeds_ada_norm=model.num_classes,
                norm_eps=1e-6)  # our LayerNorms use eps 1e-6 (diffusers' default for the MLP norm is 1e-5)


def to_diffusers_state(state: dict, depth: int) -> dict:
    """Our (= the released DiT's) parameter names -> DiTTransformer2DModel's. diffusers gives every block its own
    timestep and label embedders (block 0's also conditions the final layer); DiT shares one, so it is copied.
    The fixed 2-D sin-cos position table is not stored: diffusers recomputes it (`to_diffusers` checks it is ours)."""
    out = {"pos_embed.proj.weight": state["x_embedder.proj.weight"],
           "pos_embed.proj.bias": state["x_embedder.proj.bias"],
           "proj_out_1.weight": state["final_layer.adaLN_modulation.1.weight"],
           "proj_out_1.bias": state["final_layer.adaLN_modulation.1.bias"],
           "proj_out_2.weight": state["final_layer.linear.weight"],
           "proj_out_2.bias": state["final_layer.linear.bias"]}
    for i in range(depth):
        b, d = f"blocks.{i}.", f"transformer_blocks.{i}."
        emb = d + "norm1.emb."
        for p in ("weight", "bias"):
            out[emb + f"timestep_embedder.linear_1.{p}"] = state[f"t_embedder.mlp.0.{p}"]
            out[emb + f"timestep_embedder.linear_2.{p}"] = state[f"t_embedder.mlp.2.{p}"]
            out[d + f"norm1.linear.{p}"] = state[b + f"adaLN_modulation.1.{p}"]
            q, k, v = state[b + f"attn.qkv.{p}"].chunk(3, dim=0)  # rows ordered q, k, v
            out[d + f"attn1.to_q.{p}"], out[d + f"attn1.to_k.{p}"], out[d + f"attn1.to_v.{p}"] = q, k, v
            out[d + f"attn1.to_out.0.{p}"] = state[b + f"attn.proj.{p}"]
            out[d + f"ff.net.0.proj.{p}"] = state[b + f"mlp.fc1.{p}"]
            out[d + f"ff.net.2.{p}"] = state[b + f"mlp.fc2.{p}"]
        out[emb + "class_embedder.embedding_table.weight"] = state["y_embedder.embedding_table.weight"]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def match_time_projection(transformer) -> None:
    """diffusers builds DiT's sinusoidal time features with downscale_freq_shift=1 (frequencies exp(-ln(1e4) i/(h-1)));
    DiT and we use i/h. It is not a config field, so it is set on the modules after loading."""
    for block in transformer.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = 0


def to_diffusers(model: DiffusionTransformer):
    """A DiTTransformer2DModel holding `model`'s weights, its time projection matched to ours."""
    from diffusers import DiTTransformer2DModel

    transformer = DiTTransformer2DModel(**diffusers_config(model))
    transformer.load_state_dict(to_diffusers_state(model.state_dict(), model.depth), strict=True)
    if not torch.allclose(transformer.pos_embed.pos_embed, model.pos_embed.detach().cpu(), atol=1e-6):
        raise ValueError("diffusers' position table differs from this model's; it cannot be exported to diffusers")
    match_time_projection(transformer)
    return transformer.eval()


def load_diffusers_dit(path: str | os.PathLike, device="cpu"):
    """Load an exported folder with diffusers and apply `match_time_projection` (plain from_pretrained does not)."""
    from diffusers import DiTTransformer2DModel

    transformer = DiTTransformer2DModel.from_pretrained(str(path))
    match_time_projection(transformer)
    return transformer.to(device).eval()


def export_diffusers(loaded: LoadedModel, output: str | os.PathLike) -> Path:
    """save_pretrained of the DiTTransformer2DModel (config.json + diffusion_pytorch_model.safetensors)."""
    if loaded.family != "DiT":
        raise ValueError("diffusers has no SiT (flow) transformer; export SiT models with --format safetensors")
    output = Path(output)
    to_diffusers(loaded.model).save_pretrained(str(output))
    return output
