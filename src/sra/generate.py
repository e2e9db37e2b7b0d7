"""Sampling at evaluation scale: per-image seeds, sampler dispatch (SiT ODE/SDE, DiT DDPM/DDIM), decoding to images,
resumable PNG folders and the ADM-format .npz that evaluation suites read.

Image i of a run with seed S depends only on (S, i) and the model: its label and its noise (the initial noise and the
SDE's per-step noise) come from its own generator seeded with step_seed(S, i, stream), so the batch size, the number of
processes and resumption do not change it (edm2's per-image seeding).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from . import distributed
from .checkpoint import CheckpointError
from .data.grid import to_uint8
from .estimate import FirstBatchEstimate
from .models import LoadedModel, load_model
from .models.presets import SIZES, architecture
from .runfolder import (FolderLock, RunFolderError, Stopped, StopSignals, atomic_write, check_writable, on_rank0,
                        remove_temporary)
from . import options
from .options import option
from . import process as processes
from .process.ddpm_samplers import CFG_CHANNELS
from .process.flow_samplers import DIFFUSION_FORMS

NOISE_STREAM, LABEL_STREAM = 0, 1
MANIFEST = "manifest.json"
NPZ = "samples.npz"


def process_of(loaded: LoadedModel):
    """The process a loaded model was trained with, built from its spec's process section (for the authors' files,
    the section their weights and arguments decide, `models.loading.process_of_weights`). Build it once per model
    and hand it down."""
    return processes.build(loaded.process)


@dataclass(kw_only=True)
class SamplerOptions:
    """The sampler options of `sra sample` and `sra generate`, declared once: these fields are their flags
    (`sra.options`). Unset (None) fields come from the process's protocol in `resolve`."""
    mode: str | None = option(None, choices=tuple(m for p in processes.PROCESSES.values() for m in p.modes),
                              group="sampler (defaults: the process's protocol, see above)",
                              help="SiT: ode (Euler/Heun) or sde (Euler-Maruyama); DiT: ddpm or ddim (unset: sde / "
                                   "ddpm)")
    num_steps: int | None = option(None, flag="--steps", help="sampler steps (unset: 250)")
    heun: bool = option(False, help="ODE: Heun's second-order corrector (about twice the model calls)")
    cfg_scale: float | None = option(None, help="classifier-free guidance scale, >= 1; 1 = none (unset: the ImageNet "
                                                "protocol's SiT 1.8, DiT 1.5, whatever the run trained on; the "
                                                "command prints the guidance it uses)")
    guidance_low: float | None = option(None, help="guide only at times t >= this (t: 1 noise -> 0 data; unset: 0)")
    guidance_high: float | None = option(None, help="guide only at times t <= this (unset: SiT 0.7, DiT 1)")
    sde_diffusion: str = option("t", choices=DIFFUSION_FORMS,
                                help="SDE diffusion coefficient w_t: t (g^2 = 2t on every path, the released REPA/SRA "
                                     "samplers) or sigma (w_t = sigma_t, SiT's form); equal on the linear path")
    cfg_channels: str = option("dit", choices=CFG_CHANNELS,
                               help="DiT: guide epsilon channels 0-2 only, DiT's protocol behind its published CFG "
                                    "numbers (dit), or all epsilon channels (the standard rule)")

    def resolve(self, process) -> "SamplerOptions":
        """Fill the None fields from the process's protocol; validate (an option of another process, changed from its
        default, is refused: it would be silently ignored). Returns a new object."""
        for f in dataclasses.fields(self):
            owners = [p for p in processes.PROCESSES.values() if f.name in getattr(p, "sampler_options", ())]
            if owners and type(process) not in owners and getattr(self, f.name) != f.default:
                raise ValueError(f"{options.flag_name(f)} applies to the {', '.join(p.name for p in owners)} process "
                                 f"only; this model samples with the {process.name} process")
        o = dataclasses.replace(self)
        for k, v in process.protocol.items():
            if getattr(o, k) is None:
                setattr(o, k, v)
        if o.mode not in process.modes:
            raise ValueError(f"mode {o.mode!r} does not apply to a {process.title} model; choices: "
                             f"{', '.join(process.modes)}")
        if o.num_steps < 1:
            raise ValueError(f"steps must be >= 1 (got {o.num_steps})")
        if not (math.isfinite(o.cfg_scale) and o.cfg_scale >= 1):
            raise ValueError(f"cfg scale must be >= 1 (got {o.cfg_scale}); 1 means no guidance")
        if not 0 <= o.guidance_low <= o.guidance_high <= 1:
            raise ValueError(f"guidance interval [{o.guidance_low}, {o.guidance_high}] must satisfy "
                             "0 <= low <= high <= 1")
        if o.cfg_channels not in CFG_CHANNELS:
            raise ValueError(f"unknown cfg channels {o.cfg_channels!r}; choices: {', '.join(CFG_CHANNELS)}")
        if o.sde_diffusion not in DIFFUSION_FORMS:
            raise ValueError(f"unknown SDE diffusion {o.sde_diffusion!r}; choices: {', '.join(DIFFUSION_FORMS)}")
        return o

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def sampler_line(given: SamplerOptions, opts: SamplerOptions, loaded: LoadedModel, process) -> str:
    """One line saying how images will be drawn and which guidance, and where defaults came from: the protocol
    defaults are ImageNet's (CFG 1.8 / 1.5), which a Fashion-MNIST run would otherwise get without being told."""
    if opts.cfg_scale == 1:
        guidance = "no guidance"
    else:
        where = "at every step" if (opts.guidance_low, opts.guidance_high) == (0, 1) else \
            f"for t in [{opts.guidance_low:g}, {opts.guidance_high:g}]"
        channels = process.guidance_note(opts.cfg_channels)
        guidance = f"CFG {opts.cfg_scale:g}{channels} {where}"
    shown = ("mode", "num_steps", "cfg_scale") + (("guidance_low", "guidance_high") if opts.cfg_scale != 1 else ())
    defaulted = [f for f in shown if getattr(given, f) is None]
    line = f"sampler: {opts.mode}{' (Heun)' if opts.heun else ''}, {opts.num_steps} steps, {guidance}"
    if defaulted:
        names = ", ".join("--" + {"num_steps": "steps"}.get(f, f).replace("_", "-") for f in defaulted)
        line += f" ({names}: defaults of the authors' ImageNet 256 protocol for {process.title}"
        if loaded.config and "sample_steps" in loaded.config:  # our run: its own grids are unguided Euler ODE/DDIM
            own = process.grid_mode
            line += f"; this run's training grids used --mode {own} --steps {loaded.config['sample_steps']} --cfg-scale 1"
        line += ")"
    return line


# ----------------------------------------------------------------------------------------------------------------
# Model, labels, noise, decoding
# ----------------------------------------------------------------------------------------------------------------

def describe(loaded: LoadedModel) -> str:
    m = loaded.model
    size = next((s for s, (d, h, _) in SIZES.items() if (d, h) == (m.depth, m.hidden_size)), None)
    shape = f"{size}/{m.patch_size}" if size else f"depth {m.depth}, width {m.hidden_size}, patch {m.patch_size}"
    return f"{shape} model ({loaded.process['name']} process) at input size {m.input_size}"


def load_for_sampling(checkpoint, *, model_name: str | None = None, input_size: int | None = None,
                      weights: str = "ema", device="cpu") -> LoadedModel:
    """load_model, then refuse a checkpoint for another preset or input size when the caller names one."""

    loaded = load_model(checkpoint, weights=weights, device=device)
    m = loaded.model
    if model_name is not None:
        asked = architecture(model_name)
        if asked != {k: getattr(m, k) for k in asked}:
            raise CheckpointError(f"{loaded.source} holds a {describe(loaded)}, not a {model_name}")
    if input_size is not None and input_size != m.input_size:
        raise CheckpointError(f"{loaded.source} holds a {describe(loaded)}, not input size {input_size}")
    return loaded


def check_classes(classes: Sequence[int] | None, num_classes: int) -> list[int] | None:
    if classes is None:
        return None
    classes = list(classes)
    if not classes:
        raise ValueError("the class list is empty")
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise ValueError(f"class {bad[0]} is out of range for a model with {num_classes} classes (0..{num_classes - 1})")
    return classes


def image_generators(seed: int, indices: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per image (CPU so that the noise is the same on every device)."""
    return [distributed.generator(distributed.step_seed(seed, i, NOISE_STREAM)) for i in indices]


def image_labels(seed: int, indices: Sequence[int], num_classes: int, classes: Sequence[int] | None = None):
    """Labels (N,): classes[i % len(classes)] when given, else uniform from image i's own label generator."""
    if classes:
        return torch.tensor([classes[i % len(classes)] for i in indices], dtype=torch.long)
    return torch.tensor([int(torch.randint(num_classes, (1,), generator=distributed.generator(
        distributed.step_seed(seed, i, LABEL_STREAM)))) for i in indices], dtype=torch.long)


def latent_decoding(loaded: LoadedModel, latent_store: str | None = None,
                    vae: str | None = None) -> tuple[object | None, Callable | None, dict]:
    """(VAE, unnormalize, map): the VAE and the function that turns model-space samples into what it decodes, and
    the same as data for other tools ({"scale": s}: latents = x / s; {"mean": [...], "std": [...]}: latents =
    x * std + mean per channel); (None, None, {}) for pixel models (1 or 3 channels, no store). The VAE is loaded here, so that a missing one is refused before anything is written
    (LatentDataset.decode would fall back to raw latent channels, fine for a training preview but not for
    evaluation images or an export).

    The VAE: `vae` (a diffusers AutoencoderKL folder or a repo id in the local Hugging Face cache), else $SRA_VAE,
    else the latent store's, else (no store: an authors' released checkpoint) their default SD-VAE ft-EMA
    from the cache. The map: the store's (the run's data_dir, or `latent_store`); without a store the released
    code's, latents = scaling_factor (0.18215 for the SD-VAE) x VAE latents, no shift."""
    from .data import DataError
    from .data.base import is_latent_store
    from .data.latents import open_latent_store
    from .data.vae import DEFAULT_VAE, env_vae, load_vae, vae_info

    c = loaded.model.in_channels
    device = next(loaded.model.parameters()).device
    data_dir = (loaded.config or {}).get("data_dir")
    store_dir = latent_store or (data_dir if data_dir and is_latent_store(data_dir) else None)
    name = vae or env_vae()
    if store_dir is None and c in (1, 3):
        if vae:
            raise ValueError(f"--vae is for latent models; this one works on {c}-channel pixels")
        return None, None, {}
    if store_dir is not None:
        store = open_latent_store(store_dir)
        name = name or store.vae_name
        if not name:
            raise ValueError(f"latent store {store_dir} names no VAE; pass --vae DIR (or set SRA_VAE)")
        net = load_vae(name, device=device)
        mapping = {"mean": store.channel_mean.flatten().tolist(), "std": store.channel_std.flatten().tolist()} \
            if store.normalize == "channel" else {"scale": store.scale}
        return net, store.unnormalize, mapping

    try:
        net = load_vae(name or DEFAULT_VAE, device=device)
    except DataError as e:
        if name:
            raise
        raise ValueError(f"the model works on {c}-channel latents and no VAE is known to decode them ({e}); pass "
                         "--vae DIR (a diffusers AutoencoderKL folder such as sd-vae-ft-ema, or a repo id in the local "
                         "Hugging Face cache), set SRA_VAE, or give the `sra prepare` store as "
                         "--latent-store") from None
    name = name or DEFAULT_VAE
    info = vae_info(net, name)
    if info["latent_channels"] != c:
        raise ValueError(f"the VAE {name} makes {info['latent_channels']}-channel latents but the model takes {c}")
    scale = info["scaling_factor"]
    return net, lambda x: x / scale, {"scale": scale}


def make_decoder(loaded: LoadedModel, latent_store: str | None = None,
                 vae: str | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Model-space samples -> images in [-1, 1]: pixel models pass through, latent models decode through the VAE of
    `latent_decoding` (which see for where it comes from)."""
    from .data.vae import decode_latents

    net, unnormalize, _ = latent_decoding(loaded, latent_store, vae)
    if net is None:
        return lambda x: x
    return lambda x: decode_latents(net, unnormalize(x.float()))


def sample_model_space(loaded: LoadedModel, process, opts: SamplerOptions, y: torch.Tensor,
                       generators: list[torch.Generator]) -> torch.Tensor:
    """One batch in model space (N, C, H, W) by the model's process; `opts` resolved. Initial noise row i from
    generators[i]."""
    m = loaded.model
    device = next(m.parameters()).device
    noise = torch.stack([torch.randn(m.in_channels, m.input_size, m.input_size, generator=g) for g in generators])
    noise, y = noise.to(device), y.to(device)
    own = {name: getattr(opts, name) for name in process.sampler_options}  # the process's own settings only
    return process.sample(m, noise, y, mode=opts.mode, num_steps=opts.num_steps, cfg_scale=opts.cfg_scale,
                          guidance_low=opts.guidance_low, guidance_high=opts.guidance_high, **own,
                          generator=generators)  # generators: SDE / DDPM noise, one per image


def sample_images(loaded: LoadedModel, process, opts: SamplerOptions, seed: int, indices: Sequence[int],
                  labels: torch.Tensor, decode: Callable) -> torch.Tensor:
    """Images (N, C, H, W) in [-1, 1] for the given image indices and labels; `opts` resolved."""
    with torch.no_grad():
        x = sample_model_space(loaded, process, opts, labels, image_generators(seed, indices))
        return decode(x).float()


# ----------------------------------------------------------------------------------------------------------------
# Output folder: manifest, PNGs, .npz
# ----------------------------------------------------------------------------------------------------------------

def image_path(out: Path, i: int) -> Path:
    return out / f"{i:06d}.png"


def check_manifest(out: Path, manifest: dict) -> None:
    """Refuse an output folder that holds another run's images (nothing is written here). The checkpoint is compared
    by the fingerprint of its weights, not its path: a moved checkpoint continues, an overwritten one is refused."""
    file = out / MANIFEST
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {out} is a file; use another output folder")
    if file.exists():
        try:
            old = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            old = None
        if not isinstance(old, dict):
            raise ValueError(f"{file} is not a JSON object; use another output folder")
        diffs = sorted(k for k in set(old) | set(manifest) if k != "checkpoint" and old.get(k) != manifest.get(k))
        if diffs:
            raise ValueError(f"output folder {out} holds images of another run (differs in: {', '.join(diffs)}); "
                             "use another output folder")
    elif out.is_dir() and any(out.glob("*.png")):
        raise ValueError(f"output folder {out} holds PNGs without a {MANIFEST}; use another output folder")


def save_png(image: np.ndarray, path: Path) -> None:
    """(H, W, C) uint8 -> PNG, written to a temporary name then renamed so a crash leaves no half image (no fsync: an
    image lost to a power cut is redrawn by the next run)."""
    from PIL import Image

    img = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    atomic_write(path, lambda tmp: img.save(tmp, format="PNG"), point="image-write", sync=False)


def read_png(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except (OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path} is not a readable PNG ({type(e).__name__}); delete it and run the same command "
                         "to draw it again") from None


def write_npz(out: Path, num_images: int, path: Path, labels: np.ndarray | None = None) -> tuple[int, ...]:
    """Stream PNGs 0..num_images-1 into an ADM-format .npz (arr_0: uint8 N x H x W x 3; grey repeated to 3 channels;
    arr_1: int64 class labels, as ADM's class-conditional sampler writes them) without holding all images in memory
    (50K at 256 px would be 9.8 GB)."""
    h, w = read_png(image_path(out, 0)).shape[:2]
    shape = (num_images, h, w, 3)

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            with zf.open("arr_0.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
                for i in range(num_images):
                    img = read_png(image_path(out, i))
                    img = np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img[..., :3]
                    if img.shape != shape[1:]:
                        raise ValueError(f"{image_path(out, i)} is {img.shape}, expected {shape[1:]}")
                    f.write(np.ascontiguousarray(img, dtype=np.uint8).tobytes())
            if labels is not None:
                with zf.open("arr_1.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asarray(labels, dtype=np.int64))

    atomic_write(path, write)
    return shape


# ----------------------------------------------------------------------------------------------------------------
# generate
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class GenerateResult:
    out_dir: Path
    npz: Path | None        # None when not written
    generated: int          # images made by this call (all ranks); the rest existed already
    seconds: float          # wall time of the sampling loop


def generate(checkpoint, out_dir, *, num_images: int = 50_000, seed: int = 0, batch_size: int = 32,
             options: SamplerOptions | None = None, classes: Sequence[int] | None = None,
             model_name: str | None = None, input_size: int | None = None, weights: str = "ema",
             latent_store: str | None = None, vae: str | None = None, npz: bool = True,
             progress: bool = True) -> GenerateResult:
    """Write images 0..num_images-1 as PNGs into out_dir (skipping those already there) and, on rank 0 after all
    ranks finish, out_dir/samples.npz. Under torchrun each rank makes a share of the missing images. `vae`: the VAE
    folder or cached repo id that decodes a latent model's samples (see `make_decoder`). One `generate` at a time per
    folder (a lock); what a crash loses: docs/RELIABILITY.md."""
    if num_images < 1 or batch_size < 1:
        raise ValueError(f"num images and batch size must be >= 1 (got {num_images}, {batch_size})")
    ctx = distributed.init()
    loaded = load_for_sampling(checkpoint, model_name=model_name, input_size=input_size, weights=weights,
                               device=ctx.device)
    process = process_of(loaded)
    opts = (options or SamplerOptions()).resolve(process)
    classes = check_classes(classes, loaded.model.num_classes)
    decode = make_decoder(loaded, latent_store, vae)
    distributed.print0(sampler_line(options or SamplerOptions(), opts, loaded, process))
    out = Path(out_dir)
    manifest = dict(checkpoint=str(loaded.source.resolve()), fingerprint=fingerprint(loaded.model), weights=weights,
                    seed=seed, classes=classes, latent_store=latent_store, vae=vae, sampler=opts.to_dict())
    check_manifest(out, manifest)  # every rank checks before rank 0 writes anything
    lock = FolderLock(out, "output folder")

    def claim() -> None:  # rank 0: lock the folder, check again under the lock, clear temporary files, record
        check_writable(out)
        lock.acquire()
        check_manifest(out, manifest)
        remove_temporary(out)
        atomic_write(out / MANIFEST, lambda tmp: tmp.write_text(json.dumps(manifest, indent=2) + "\n"))

    on_rank0(claim)
    try:
        return generate_in(loaded, process, opts, out, ctx, num_images, seed, batch_size, classes, decode, npz,
                           progress)
    finally:
        lock.release()


def fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 (16 hex digits) of the weights sampled with: what a resumed generation must match."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def generate_in(loaded, process, opts, out, ctx, num_images, seed, batch_size, classes, decode, npz, progress):
    """The sampling loop of `generate`, with the output folder claimed; every finished image is kept. Under torchrun a
    rank that fails stops every rank, each with one line."""
    from tqdm.auto import tqdm

    missing = [i for i in range(num_images) if not image_path(out, i).exists()]
    distributed.barrier()  # every rank has listed before any writes
    mine = missing[ctx.rank::ctx.world_size]
    if not missing:
        distributed.print0(f"all {num_images} images are already in {out}")

    # no bar for a finished folder: tqdm would draw it twice (when opened and when closed) with nothing to show
    bar = tqdm(total=num_images, initial=num_images - len(missing), unit="img", dynamic_ncols=True,
               disable=not (progress and ctx.is_main and missing))
    # rank 0's share at rank 0's rate stands for all ranks'; tqdm.write keeps the line off the bar
    estimate = FirstBatchEstimate(len(mine), "images", write=tqdm.write if ctx.is_main else (lambda line: None),
                                  note=f"this process's share; {ctx.world_size} processes" if ctx.distributed else "")
    start = time.perf_counter()
    sample_share(loaded, process, opts, out, ctx, missing, seed, batch_size, classes, decode, bar, estimate)
    seconds = time.perf_counter() - start
    bar.close()
    distributed.barrier()
    npz_path = out / NPZ if npz else None
    if npz_path is not None:
        def write() -> None:
            labels = image_labels(seed, range(num_images), loaded.model.num_classes, classes).numpy()
            shape = write_npz(out, num_images, npz_path, labels)
            print(f"wrote {npz_path} (arr_0 {'x'.join(map(str, shape))} uint8)", flush=True)

        on_rank0(write)  # a failure there stops every rank, not only rank 0
    distributed.barrier()
    return GenerateResult(out, npz_path, len(missing), seconds)


def sample_share(loaded, process, opts, out, ctx, missing, seed, batch_size, classes, decode, bar, estimate) -> None:
    """This rank's missing images (every W-th) batch by batch, each PNG saved as soon as it is sampled. After each
    batch the ranks agree: a failure on any of them stops all, each with one line, within one batch. Alone (not under
    torchrun) SIGTERM/SIGINT stop after the current batch."""
    def draw(idx: list[int]) -> None:
        if not idx:  # a shorter share's last batch: nothing to draw, but the ranks still agree
            return
        y = image_labels(seed, idx, loaded.model.num_classes, classes)
        # to_uint8's default truncation is the reference's quantisation, so the .npz compares with published FIDs
        for i, img in zip(idx, to_uint8(sample_images(loaded, process, opts, seed, idx, y, decode))):
            save_png(img, image_path(out, i))

    with (contextlib.nullcontext() if ctx.distributed else StopSignals()) as signals:
        for batch in distributed.strided_batches(len(missing), batch_size):
            idx = [missing[k] for k in batch]
            _, error, failed = distributed.failed_anywhere(draw, idx)
            if failed:
                bar.close()
                raise error or RunFolderError(f"another process stopped (its message says why); the finished images "
                                              f"are kept in {out}: run the same command to continue")
            if idx:
                estimate.done(len(idx))
            bar.update(min(len(idx) * ctx.world_size, bar.total - bar.n))  # rank 0's progress stands for all ranks'
            if signals is not None and signals.received:
                bar.close()
                have = sum(image_path(out, i).exists() for i in range(bar.total))
                raise Stopped(f"stopped by {signals.received}; {have} of {bar.total} images are in {out}; run the "
                              "same command to continue", signals.exit_code)
