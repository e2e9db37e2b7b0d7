"""Hand trained weights to other tools, each export a folder with a model card (README.md):
- safetensors: EMA weights + a JSON config that `load_model` reads back;
- diffusers, DiT: a folder that `diffusers.DiTPipeline.from_pretrained` loads as is (transformer, DDIM scheduler of
  our linear beta schedule, the VAE of a latent run);
- diffusers, SiT: a folder with its own pipeline and model code (diffusers has no SiT), loaded with
  `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`; files in `sra.models.diffusers_sit`.
Every export is written into a stage inside its folder and moved in by `runfolder.staged`, which refuses a symbolic
link anywhere under the folder before anything is written (no write lands outside it)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from .. import __version__
from ..checkpoint import CheckpointError
from ..runfolder import read_jsonl, staged
from .dit import DiffusionTransformer
from .loading import LoadedModel, check_architecture, read_json

SAFETENSORS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
PAPER = "https://arxiv.org/abs/2505.02831"
DIFFUSERS_NULL_CLASS = 1000  # DiTPipeline's null label for guidance, hard-coded (ImageNet's 1000 classes)
SIT_FILES = Path(__file__).parent / "diffusers_sit"


def architecture(model: DiffusionTransformer) -> dict:
    """Constructor arguments that rebuild `model` exactly (num_heads included, which shapes cannot tell)."""
    mlp_hidden = model.blocks[0].mlp.fc1.out_features
    return dict(input_size=model.input_size, patch_size=model.patch_size, in_channels=model.in_channels,
                hidden_size=model.hidden_size, depth=model.depth, num_heads=model.num_heads,
                mlp_ratio=mlp_hidden / model.hidden_size, num_classes=model.num_classes,
                class_dropout_prob=model.y_embedder.dropout_prob, learn_sigma=model.learn_sigma)


def export_safetensors(loaded: LoadedModel, output: str | os.PathLike) -> Path:
    """OUTPUT/model.safetensors (the loaded weights, EMA by default; the config also in its metadata) and
    OUTPUT/config.json ({format, process, architecture, step, train_config}: the run spec, whose process section
    `sra sample` and `sra generate` sample with)."""
    from safetensors.torch import save_file

    output = Path(output)
    config = {"format": "sra", "process": loaded.process, "architecture": architecture(loaded.model),
              "step": loaded.step, "train_config": loaded.config}
    state = {k: v.detach().contiguous().cpu() for k, v in loaded.model.state_dict().items()}
    usage = (f"```python\nfrom sra.models import load_model\nloaded = load_model(\"{output.name}\")   # this folder; "
             f"loaded.model is the model in eval mode\n```\n\n`sra sample {output.name}` and "
             f"`sra generate {output.name}` read it as they read a run folder.")
    with staged(output) as stage:
        save_file(state, str(stage / SAFETENSORS_NAME), metadata={"sra_config": json.dumps(config)})
        (stage / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        write_model_card(loaded, stage, library="sra", usage=usage)
    return output


# ----------------------------------------------------------------------------------------------------------------
# Model card
# ----------------------------------------------------------------------------------------------------------------

def run_folder_of(loaded: LoadedModel) -> Path | None:
    """The run folder of one of our checkpoints (RUN/checkpoints/NNNNNNN.pt), else None."""
    src = Path(loaded.source)
    return src.parent.parent if src.parent.name == "checkpoints" else None


def logged_evaluations(run: Path | None) -> list[tuple[int | None, str, float]]:
    """(step, metric, value) of the last logged evaluation of each kind: metrics.jsonl's eval rows (--eval-every) and
    `sra eval --metric fmnist RUN`'s eval_fmnist_step*.json files."""
    if run is None:
        return []
    names = {"fd_fmnist": "FD-FMNIST", "class_acc": "class accuracy (FD-FMNIST classifier)", "fid": "FID",
             "inception_score": "Inception Score"}
    found: dict[str, tuple] = {}
    rows = read_jsonl(run / "metrics.jsonl")
    for f in sorted(run.glob("eval_fmnist_step*.json")):
        try:
            rows.append(json.loads(f.read_text()))
        except (json.JSONDecodeError, OSError):
            continue
    for row in sorted((r for r in rows if isinstance(r, dict)), key=lambda r: r.get("step") or 0):
        for key, name in names.items():
            if isinstance(row.get(key), (int, float)):
                found[name] = (row.get("step"), name, float(row[key]))
    return list(found.values())


# the model card's kind of model, by the process it was trained with: (model name, hub tag, what it is)
CARD_KIND = {"flow": ("SiT", "flow-matching", "flow matching, {prediction} prediction"),
             "ddpm": ("DiT", "ddpm", "DDPM, epsilon and learned variance")}


def write_model_card(loaded: LoadedModel, folder: Path, *, library: str, usage: str, notes: str = "") -> Path:
    """FOLDER/README.md: hub metadata (library, license, tags, paper), what the folder holds and how to load it, the
    training config and step, and the evaluations the run logged (none invented)."""
    m = loaded.model
    title, tag, kind = CARD_KIND.get(loaded.process["name"], ("model", loaded.process["name"], loaded.process["name"]))
    kind = kind.format(prediction=loaded.process.get("prediction", "velocity"))
    tags = ["sra", "self-representation-alignment", title.lower(), "diffusion-transformer", "class-conditional",
            "image-generation", tag, "arxiv:2505.02831"]
    evals = logged_evaluations(run_folder_of(loaded))
    eval_text = "\n".join(["| step | metric | value |", "|---:|---|---:|"] +
                          [f"| {step} | {name} | {value:.4f} |" for step, name, value in evals]) if evals else \
        "The run logged no evaluation (`sra train --eval-every`, `sra eval`)."
    config = json.dumps(loaded.config, indent=2) if loaded.config else "(no training config in the checkpoint)"
    step = loaded.step if loaded.step is not None else "unknown"
    text = f"""---
library_name: {library}
license: mit
tags:
{chr(10).join(f"- {t}" for t in tags)}
---

# {title} trained with Self-Representation Alignment

A class-conditional {title} ({kind}; depth {m.depth}, width {m.hidden_size}, {m.num_heads} heads, patch {m.patch_size}, input {m.in_channels} x
{m.input_size} x {m.input_size}, {m.num_classes} classes) trained with Self-Representation Alignment (SRA,
[arXiv 2505.02831]({PAPER})): an early block's tokens at higher noise are aligned, through a projection head dropped
after training, to a later block's tokens of the model's own EMA copy at lower noise.

Exported by `sra export` (sra-diffusion {__version__}) from `{Path(loaded.source).name}`, training step
{step}; the weights are the EMA's unless the export was asked for
the online ones. License: MIT (the code's); the training data's terms are the user's to check.

## Use

{usage}
{notes}
## Evaluation (as logged by the run)

{eval_text}

## Training config

```json
{config}
```
"""
    path = folder / "README.md"
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------------------------------------------
# diffusers, DiT: DiTTransformer2DModel + DDIMScheduler + AutoencoderKL = DiTPipeline
# ----------------------------------------------------------------------------------------------------------------

def diffusers_config(model: DiffusionTransformer) -> dict:
    """DiTTransformer2DModel's config. Its label table always has DIFFUSERS_NULL_CLASS + 1 rows, because DiTPipeline
    guides with class 1000 whatever the model: our null row (`num_classes`) is moved there (`to_diffusers_state`)."""
    if not model.learn_sigma:
        raise ValueError("diffusers has no SiT (flow) transformer; SiT exports ship their own pipeline")
    if model.blocks[0].mlp.fc1.out_features != 4 * model.hidden_size:
        raise ValueError("diffusers' DiT has MLP ratio 4; this model's differs")
    if model.num_classes > DIFFUSERS_NULL_CLASS:
        raise ValueError(f"DiTPipeline guides with class {DIFFUSERS_NULL_CLASS} as the null label, so a model with "
                         f"{model.num_classes} classes cannot be exported to it; use --format safetensors")
    return dict(num_attention_heads=model.num_heads, attention_head_dim=model.hidden_size // model.num_heads,
                in_channels=model.in_channels, out_channels=model.out_channels, num_layers=model.depth,
                sample_size=model.input_size, patch_size=model.patch_size, num_embeds_ada_norm=DIFFUSERS_NULL_CLASS,
                norm_eps=1e-6)  # our LayerNorms use eps 1e-6 (diffusers' default for the MLP norm is 1e-5)


# How a DiTTransformer2DModel config spells DiffusionTransformer's arguments (`diffusers_config` writes them; the
# width is heads x head dim, the output layout out_channels)
DIFFUSERS_NAMES = {"input_size": "sample_size", "patch_size": "patch_size", "in_channels": "in_channels",
                   "num_heads": "num_attention_heads", "hidden_size": "num_attention_heads x attention_head_dim",
                   "depth": "num_layers", "num_classes": "num_embeds_ada_norm", "learn_sigma": "out_channels"}


def diffusers_architecture(config, source: str) -> dict:
    """The checked architecture (`check_architecture`) of a DiTTransformer2DModel config, in our terms: what diffusers
    would build from it, so a tampered config is one line before any module exists. A value of the wrong kind passes
    through for the check to name."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{source}: not a diffusers config object")
    get = config.get
    heads, head_dim, c, out = (get("num_attention_heads"), get("attention_head_dim"), get("in_channels"),
                               get("out_channels"))
    sizes = all(type(v) is int for v in (heads, head_dim, c))
    if sizes and out not in (None, c, 2 * c):
        raise CheckpointError(f"{source}: out_channels {out!r} is neither in_channels {c} nor twice it (DiT's outputs)")
    arch = dict(input_size=get("sample_size"), patch_size=get("patch_size"), in_channels=c, num_heads=heads,
                hidden_size=heads * head_dim if sizes else head_dim, depth=get("num_layers"),
                num_classes=get("num_embeds_ada_norm"), mlp_ratio=4.0, class_dropout_prob=0.1,
                learn_sigma=out == 2 * c if sizes else out)
    return check_architecture(arch, source, DIFFUSERS_NAMES)


def diffusers_label_table(table: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Our (K [+ 1 null], D) label table as diffusers' (1001, D): classes at 0..K-1, our null row (if any) at 1000,
    the rows between NaN, so that a class the model never learned gives NaN images instead of plausible ones."""
    out = torch.full((DIFFUSERS_NULL_CLASS + 1, table.shape[1]), float("nan"), dtype=table.dtype)
    out[:num_classes] = table[:num_classes]
    if table.shape[0] > num_classes:
        out[DIFFUSERS_NULL_CLASS] = table[num_classes]
    return out


def to_diffusers_state(state: dict, depth: int, num_classes: int) -> dict:
    """Our (= the released DiT's) parameter names -> DiTTransformer2DModel's. diffusers gives every block its own
    timestep and label embedders (block 0's also conditions the final layer); DiT shares one, so it is copied.
    The fixed 2-D sin-cos position table is not stored: diffusers recomputes it (`to_diffusers` checks it is ours)."""
    table = diffusers_label_table(state["y_embedder.embedding_table.weight"], num_classes)
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
        out[emb + "class_embedder.embedding_table.weight"] = table
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def match_time_projection(transformer) -> None:
    """diffusers builds DiT's sinusoidal time features with downscale_freq_shift=1 (frequencies exp(-ln(1e4) i/(h-1)));
    DiT and we use i/h. It is hard-coded in diffusers' CombinedTimestepLabelEmbeddings, not a config field, so no
    exported config can fix it: it is set on the modules after loading (the model card shows the loop)."""
    for block in transformer.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = 0


def to_diffusers(model: DiffusionTransformer):
    """A DiTTransformer2DModel holding `model`'s weights, its time projection matched to ours."""
    from diffusers import DiTTransformer2DModel

    transformer = DiTTransformer2DModel(**diffusers_config(model))
    transformer.load_state_dict(to_diffusers_state(model.state_dict(), model.depth, model.num_classes), strict=True)
    if not torch.allclose(transformer.pos_embed.pos_embed, model.pos_embed.detach().cpu(), atol=1e-6):
        raise ValueError("diffusers' position table differs from this model's; it cannot be exported to diffusers")
    match_time_projection(transformer)
    return transformer.eval()


def ddim_scheduler():
    """diffusers' DDIM on our (= DiT's) schedule: linear betas 1e-4 .. 0.02 over 1000 steps, epsilon prediction,
    timesteps 0, 1000/N, ... ('leading', DiT's "ddimN" respacing when N divides 1000), last step to alpha_bar = 1, no
    clipping: the same deterministic sampler as `sra sample --mode ddim`."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                         clip_sample=False, set_alpha_to_one=True, steps_offset=0, timestep_spacing="leading",
                         prediction_type="epsilon")


def save_vae(vae, folder: Path, latent_map: dict) -> None:
    """The run's AutoencoderKL; for DiTPipeline its scaling_factor must be the run's latent scale (it decodes
    latents / scaling_factor)."""
    if "scale" in latent_map:
        vae.register_to_config(scaling_factor=float(latent_map["scale"]))
    vae.save_pretrained(str(folder))


def write_model_index(folder: Path, index: dict) -> None:
    import diffusers

    (folder / "model_index.json").write_text(json.dumps({**index, "_diffusers_version": diffusers.__version__},
                                                        indent=2) + "\n")


def export_dit_pipeline(loaded: LoadedModel, output: str | os.PathLike, vae=None, latent_map: dict | None = None) -> Path:
    """A DiTPipeline folder: transformer/, scheduler/ (DDIM), vae/, model_index.json, README.md (latent models only)."""
    output = Path(output)
    latent_map = latent_map or {}
    if vae is not None and "scale" not in latent_map:
        raise ValueError("this run's latents are normalised per channel, which DiTPipeline cannot undo (it divides "
                         "by vae.config.scaling_factor only); use --format safetensors")
    transformer = to_diffusers(loaded.model)  # refused (ValueError) before anything is written
    if vae is None:  # DiTPipeline always decodes through its vae: a folder without one does not load
        raise ValueError(f"a {loaded.model.in_channels}-channel pixel DiT has no VAE, which DiTPipeline needs; "
                         "use --format safetensors")
    usage = f"""```python
import torch
from diffusers import DiTPipeline

pipe = DiTPipeline.from_pretrained("{output.name}")
# diffusers hard-codes DiT's time features with downscale_freq_shift=1; DiT (and this model) use 0. Without this loop
# the outputs differ noticeably; with it they equal sra's (DDIM on DiT's ddimN grid) to ~1e-5:
for block in pipe.transformer.transformer_blocks:
    block.norm1.emb.time_proj.downscale_freq_shift = 0
images = pipe(class_labels=[0, 1, 2], num_inference_steps=50, guidance_scale=1.0).images
```
"""
    notes = f"""
- Scheduler: DDIM on the training schedule (linear betas 1e-4 to 0.02, 1000 steps); with N steps dividing 1000 it is
  `sra sample --mode ddim --steps N`. DDPM with the learned variance is not available in DiTPipeline (it drops the
  variance channels before the scheduler); use sra for it.
- Guidance: DiTPipeline's default `guidance_scale` is 4.0 and it uses class {DIFFUSERS_NULL_CLASS} as the null label;
  this export stores the model's null embedding in row {DIFFUSERS_NULL_CLASS}, so guidance works. It guides every
  epsilon channel (`sra sample --cfg-channels all`), not DiT's channels 0-2 (`--cfg-channels dit`, the published
  protocol). Class ids {loaded.model.num_classes}..{DIFFUSERS_NULL_CLASS - 1} do not exist and give NaN images.
- VAE: the run's, with scaling_factor set to its latent scale.
"""
    with staged(output) as stage:
        transformer.save_pretrained(str(stage / "transformer"))
        ddim_scheduler().save_pretrained(str(stage / "scheduler"))
        save_vae(vae, stage / "vae", latent_map)
        write_model_index(stage, {"_class_name": "DiTPipeline", "transformer": ["diffusers", "DiTTransformer2DModel"],
                                  "scheduler": ["diffusers", "DDIMScheduler"], "vae": ["diffusers", "AutoencoderKL"]})
        write_model_card(loaded, stage, library="diffusers", usage=usage, notes=notes)
    return output


# ----------------------------------------------------------------------------------------------------------------
# diffusers, SiT: our pipeline and model code shipped in the folder
# ----------------------------------------------------------------------------------------------------------------

def sit_transformer_config(model: DiffusionTransformer) -> dict:
    return dict(input_size=model.input_size, patch_size=model.patch_size, in_channels=model.in_channels,
                hidden_size=model.hidden_size, depth=model.depth, num_heads=model.num_heads,
                mlp_hidden_size=model.blocks[0].mlp.fc1.out_features, num_classes=model.num_classes,
                class_dropout_prob=model.y_embedder.dropout_prob)


def export_sit_pipeline(loaded: LoadedModel, output: str | os.PathLike, vae=None, latent_map: dict | None = None,
                        path_type: str = "linear") -> Path:
    """A SiTPipeline folder: pipeline_sit.py, transformer/ (modeling_sit.py, config.json, weights), vae/ for latent
    models, model_index.json (the pipeline's path and latent map), README.md. The weights are ours without the
    training-only SRA head (the terms' own modules are never in the model's weights)."""
    output = Path(output)
    import diffusers
    from safetensors.torch import save_file

    latent_map = latent_map or {}
    config = {"_class_name": "SiTTransformer2DModel", "_diffusers_version": diffusers.__version__,
              **sit_transformer_config(loaded.model)}
    state = {k: v.detach().contiguous().cpu() for k, v in loaded.model.state_dict().items()
             if not k.startswith("ap_head.")}
    usage = f"""```python
from diffusers import DiffusionPipeline

# the folder ships its pipeline (pipeline_sit.py) and model code (transformer/modeling_sit.py): trust_remote_code
pipe = DiffusionPipeline.from_pretrained("{output.name}", trust_remote_code=True)
images = pipe(class_labels=[0, 1, 2], num_inference_steps=50, mode="ode", guidance_scale=1.0).images
```

The defaults (`mode="sde"`, 250 steps, `guidance_scale=1.8` in `guidance_low=0.0` .. `guidance_high=0.7`) are the
authors' ImageNet protocol and `sra sample`'s (pass `guidance_scale=1.0` for none). With one
`torch.Generator` per image seeded as sra seeds image i (`sra.generate.image_generators(seed, range(n))`), the
images equal `sra sample`'s for the same options.
"""
    notes = f"""
- Path: {path_type}; the SDE reads the score off the velocity through it (w_t = t, the released samplers).
- {"VAE: the run's; model-space samples become its latents by " + (
    f"x / {latent_map['scale']}" if "scale" in latent_map else "x * std + mean per channel (the run's statistics)")
   if vae is not None else "Pixel model, no VAE."}
"""
    with staged(output) as stage:
        (stage / "transformer").mkdir()
        shutil.copyfile(SIT_FILES / "pipeline_sit.py", stage / "pipeline_sit.py")
        shutil.copyfile(SIT_FILES / "modeling_sit.py", stage / "transformer" / "modeling_sit.py")
        (stage / "transformer" / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        save_file(state, str(stage / "transformer" / "diffusion_pytorch_model.safetensors"))
        if vae is not None:
            save_vae(vae, stage / "vae", {})
        write_model_index(stage, {
            "_class_name": ["pipeline_sit", "SiTPipeline"], "transformer": ["modeling_sit", "SiTTransformer2DModel"],
            "vae": ["diffusers", "AutoencoderKL"] if vae is not None else [None, None], "path_type": path_type,
            "latent_scale": latent_map.get("scale"), "latent_mean": latent_map.get("mean"),
            "latent_std": latent_map.get("std"), "id2label": None})
        write_model_card(loaded, stage, library="diffusers", usage=usage, notes=notes)
    return output


def load_diffusers_dit(path: str | os.PathLike, device="cpu"):
    """Load an exported folder's transformer with diffusers and apply `match_time_projection` (plain from_pretrained
    does not). `path`: the export folder or its transformer/ subfolder."""
    from diffusers import DiTTransformer2DModel

    path = Path(path)
    if (path / "transformer").is_dir():
        path = path / "transformer"
    diffusers_architecture(read_json(path / "config.json"), str(path / "config.json"))  # before diffusers builds it
    transformer = DiTTransformer2DModel.from_pretrained(str(path))
    match_time_projection(transformer)
    return transformer.to(device).eval()
