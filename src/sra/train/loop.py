"""The training loop: one top-to-bottom function. EMA, checkpoints, data order and logging live beside it."""
from __future__ import annotations

import contextlib
import copy
import json
import os
import time
from pathlib import Path

import torch

from .. import distributed
from ..data import load_dataset
from ..data.grid import save_grid
from ..models import build_model
from ..objectives import combine, slice_draws
from .checkpoint import (CheckpointError, checkpoint_path, latest_checkpoint, load_checkpoint, prune_checkpoints,
                         save_checkpoint)
from .config import TrainConfig, config_differences
from . import parallel
from .ema import ema_decay, update_ema
from .tracking import Tracker


class RunFolderError(ValueError):
    """The run folder holds another run; nothing is touched."""


# ----------------------------------------------------------------------------------------------------------------
# Data order: a global, world-size-independent schedule of batches
# ----------------------------------------------------------------------------------------------------------------

class BatchSchedule:
    """Global batch indices for any step: per-epoch permutations seeded by (seed, epoch), drop-last. Every rank
    computes the same schedule and takes its own slice, so the data seen does not depend on the world size, and a
    resumed run continues from its step without saving loader state."""

    def __init__(self, n: int, batch_size: int, seed: int):
        if n < batch_size:
            raise ValueError(f"dataset has {n} items, fewer than the batch size {batch_size}")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.per_epoch = n // batch_size
        self._epoch, self._perm = -1, None

    def epoch(self, step: int) -> int:
        return step // self.per_epoch

    def indices(self, step: int) -> torch.Tensor:
        epoch, offset = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            self._perm = torch.randperm(self.n, generator=distributed.generator(distributed.step_seed(self.seed, epoch, 1)))
            self._epoch = epoch
        return self._perm[offset * self.batch_size: (offset + 1) * self.batch_size]


def local_batches(dataset, schedule: BatchSchedule, start: int, stop: int, ctx, cfg: TrainConfig):
    """Yield (step, [(x, y) per micro-step]) for this rank. In-memory data is gathered directly; other datasets go
    through a DataLoader (workers, pinned memory, prefetch) over the same index schedule."""
    micro = cfg.batch_size // (ctx.world_size * cfg.grad_accum)

    def parts(idx):
        per_accum = cfg.batch_size // cfg.grad_accum
        return [idx[a * per_accum + ctx.rank * micro: a * per_accum + (ctx.rank + 1) * micro]
                for a in range(cfg.grad_accum)]

    if hasattr(dataset, "get_batch"):
        pin = ctx.device.type == "cuda"  # pinned host memory: the step's non_blocking copy does not wait for the GPU
        for step in range(start, stop):
            batches = [dataset.get_batch(p) for p in parts(schedule.indices(step))]
            yield step, [tuple(t.pin_memory() for t in b) for b in batches] if pin else batches  # (x, y[, features])
        return
    sampler = [p.tolist() for step in range(start, stop) for p in parts(schedule.indices(step))]
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.num_workers,
                                         pin_memory=ctx.device.type == "cuda",
                                         prefetch_factor=4 if cfg.num_workers else None,
                                         persistent_workers=False)
    it = iter(loader)
    for step in range(start, stop):
        yield step, [next(it) for _ in range(cfg.grad_accum)]


# ----------------------------------------------------------------------------------------------------------------
# Run folder
# ----------------------------------------------------------------------------------------------------------------

def check_run_dir(cfg: TrainConfig) -> Path:
    """OUTPUT_DIR/EXP_NAME must be new, empty, or hold the same run (then we resume). Touches nothing."""
    run = Path(cfg.output_dir) / cfg.exp_name
    cfg_file = run / "config.json"
    if cfg_file.exists():
        try:
            old = json.loads(cfg_file.read_text())
        except json.JSONDecodeError:
            raise RunFolderError(f"{cfg_file} is not valid JSON; choose another --exp-name") from None
        diffs = config_differences(old, cfg.to_dict())
        if diffs:
            raise RunFolderError(f"run folder {run} holds a different run (differs in: {', '.join(diffs[:6])}); "
                                 "use another --exp-name or --output-dir")
    elif run.exists() and any(run.iterdir()):
        raise RunFolderError(f"run folder {run} exists and is not an sra run; use another --exp-name")
    return run


def write_run_dir(run: Path, cfg: TrainConfig, ctx) -> None:
    """Rank 0 creates the folders and writes the resolved config (after a resume has loaded successfully)."""
    if ctx.is_main:
        (run / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run / "samples").mkdir(exist_ok=True)
        tmp = run / "config.json.tmp"
        tmp.write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        os.replace(tmp, run / "config.json")
    distributed.barrier()


def build_objective(cfg: TrainConfig, encoder=None):
    """The loss of the config; `encoder`: REPA's frozen encoder when it runs at train time (objectives.repa)."""
    if cfg.family == "SiT":
        from ..models.presets import parse_name
        from ..objectives import FlowObjective
        return FlowObjective(cfg.flow, cfg.align, cfg.mix, parse_name(cfg.model)[2], cfg.repa, encoder)
    from ..objectives.ddpm import DiffusionObjective  # DiT: DDPM with learned sigma
    return DiffusionObjective(cfg.align)


def sample_grid(cfg: TrainConfig, ema, dataset, shape, device) -> torch.Tensor:
    """Fixed-noise samples from the EMA: up to 10 classes as rows, 8 columns."""
    classes = torch.linspace(0, cfg.num_classes - 1, min(cfg.num_classes, 10)).round().long()
    y = classes.repeat_interleave(8).to(device)
    noise = torch.randn((len(y), *shape), generator=distributed.generator(cfg.seed + 12345)).to(device)
    if cfg.family == "SiT":
        from ..transport import euler_sampler
        x = euler_sampler(ema, noise, y, num_steps=cfg.sample_steps)
    else:
        from ..diffusion import sample as diffusion_sample
        x = diffusion_sample(ema, noise, y, method="ddim", num_steps=cfg.sample_steps)
    if hasattr(dataset, "decode"):
        x = dataset.decode(x)
    return x


def optimizer_update(model, opt, scaler, ema, params, max_grad_norm: float, decay: float,
                     fp16: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Unscale and clip the gradients; step the optimizer unless they are non-finite; update the EMA; clear the
    gradients. Returns (gradient norm, skipped) as 0-d device tensors: nothing here waits for the device.

    The skip decision stays on the device (docs/PERFORMANCE.md): a fused optimizer reads `found_inf` and leaves weights,
    moments and step count unchanged when it is 1 (this is how GradScaler drives fused optimizers; with fp16 the scaler
    sets it itself). After a skipped step the weights are unchanged, so the EMA update only moves the EMA toward the
    same finite weights. Only a non-fused optimizer (FSDP) needs the host to decide. `sra bench` times this function."""
    scaler.unscale_(opt)
    grad_norm = parallel.full_value(torch.nn.utils.clip_grad_norm_(params, max_grad_norm))
    skipped = ~torch.isfinite(grad_norm)
    if fp16:
        scaler.step(opt)  # the scaler finds the non-finite gradients and skips the step itself
    elif opt.defaults.get("fused"):
        opt.found_inf = skipped.float()
        opt.step()
    elif not skipped:  # the one host sync, non-fused optimizers only
        opt.step()
    update_ema(ema, parallel.full_params(model), decay)
    scaler.update()
    opt.zero_grad(set_to_none=True)
    return grad_norm, skipped


# ----------------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------------

def train(cfg: TrainConfig) -> Path:
    ctx = distributed.init()
    # 1. Data and the resolved config.
    dataset = load_dataset(cfg.data_dir)
    cfg = cfg.resolve(dataset.shape, dataset.num_classes, ctx.device.type)
    if cfg.batch_size % (ctx.world_size * cfg.grad_accum):
        raise ValueError(f"global batch {cfg.batch_size} is not divisible by world size {ctx.world_size} x "
                         f"accumulation {cfg.grad_accum}")
    run = check_run_dir(cfg)
    torch.manual_seed(cfg.seed)

    # 2. Model (with REPA's projector when on), EMA (= SRA teacher), optimizer, loss scaler.
    repa_kw, encoder = {}, None
    if cfg.repa.active:
        from ..models.presets import parse_name
        from ..objectives.repa import feature_source
        z_dim, encoder = feature_source(cfg.repa, dataset, cfg.input_size // parse_name(cfg.model)[2], ctx.device)
        repa_kw = dict(z_dims=(z_dim,), projector_dim=cfg.repa.projector_dim)
    model = build_model(cfg.model, input_size=cfg.input_size, in_channels=cfg.in_channels,
                        num_classes=cfg.num_classes, **repa_kw).to(ctx.device)
    if not (cfg.align.active and cfg.align.use_head):
        model.ap_head.requires_grad_(False)  # unused head: no gradient, no optimizer state, no DDP complaints
    model.grad_checkpointing = cfg.activation_checkpointing
    ema = copy.deepcopy(model).requires_grad_(False).eval()  # unsharded on every rank, also under FSDP
    # Wrappers from outside the model: FSDP shards `model` in place, DDP wraps it, compile wraps the result.
    train_model = parallel.wrap(model, ctx, cfg.fsdp, cfg.mixed_precision)
    if cfg.compile:
        train_model = torch.compile(train_model)
    # Fused AdamW: one kernel for all parameters (4.5x faster than the default on CPU, docs/PERFORMANCE.md).
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr,
                            betas=cfg.adam_betas, weight_decay=cfg.weight_decay, fused=not parallel.is_sharded(model))
    fp16 = cfg.mixed_precision == "fp16"
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=fp16)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.mixed_precision)

    # 3. Resume: the same command continues from the latest checkpoint.
    start = 0
    ckpt_file = latest_checkpoint(run)
    if ckpt_file is not None:
        ck = load_checkpoint(ckpt_file)
        try:
            parallel.load_model_and_optimizer_state(model, opt, ck["model"], ck["opt"])
            ema.load_state_dict(ck["ema"])
            scaler.load_state_dict(ck["scaler"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{ckpt_file} does not fit this run: {str(e).splitlines()[0]}") from None
        start = int(ck["step"])
        distributed.print0(f"resuming {run} from step {start}")
    write_run_dir(run, cfg, ctx)

    # 4. Objective, teacher, data order.
    objective = build_objective(cfg, encoder)
    teacher = ema if cfg.align.teacher == "ema" else model  # "online": the trained weights, no gradient
    schedule = BatchSchedule(len(dataset), cfg.batch_size, cfg.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    sample_shape = dataset.shape
    metrics = open(run / "metrics.jsonl", "a") if ctx.is_main else None
    tracker = Tracker(cfg.report_to if ctx.is_main else "none", run, cfg.to_dict(), start)
    fid = None
    if cfg.eval_every and cfg.eval_ref:  # FID/IS on real data: every rank samples its share
        from ..evaluation.training_fid import TrainingFID
        fid = TrainingFID(ema, family=cfg.family, run_config=cfg.to_dict(), reference=cfg.eval_ref,
                          num_samples=cfg.eval_samples, num_steps=cfg.sample_steps, seed=cfg.seed,
                          batch_size=max(1, cfg.batch_size // ctx.world_size), inception_weights=cfg.eval_inception,
                          device=ctx.device)
    elif cfg.eval_every:
        if getattr(dataset, "name", "") != "fashion-mnist":
            raise ValueError("--eval-every needs Fashion-MNIST data (FD-FMNIST is its metric) or --eval-ref REF (FID)")
        from ..evaluation.fmnist import evaluate_fmnist_for_training, fmnist_scorer
        if ctx.is_main:
            fmnist_scorer(ctx.device)  # train/cache the classifier now, not in the middle of the run
    stats, t_log, skipped = {}, time.perf_counter(), 0

    from tqdm.auto import tqdm
    bar = tqdm(total=cfg.max_train_steps, initial=start, disable=not (ctx.is_main and cfg.progress),
               desc=f"{cfg.exp_name}", unit="step", dynamic_ncols=True)
    # SRA_SYNC_DEBUG=1 on CUDA: any host-device synchronisation inside steps 5-7 raises (from the second step on; the
    # first initialises libraries and caches). The step is meant to be free of them (docs/PERFORMANCE.md).
    sync_debug = ctx.device.type == "cuda" and os.environ.get("SRA_SYNC_DEBUG") == "1"
    for step, micro_batches in local_batches(dataset, schedule, start, cfg.max_train_steps, ctx, cfg):
        if sync_debug and step > start:
            torch.cuda.set_sync_debug_mode("error")
        # 5. Learning rate (linear warm-up, then constant) and the step's draws for the whole global batch.
        lr = cfg.lr * min(1.0, (step + 1) / cfg.lr_warmup_steps) if cfg.lr_warmup_steps else cfg.lr
        for group in opt.param_groups:
            group["lr"] = lr
        gen = distributed.generator(distributed.step_seed(cfg.seed, step), ctx.device)
        draws = objective.draw(cfg.batch_size, sample_shape, ctx.device, gen)
        posterior_gen = distributed.generator(distributed.step_seed(cfg.seed, step, 2 + ctx.rank), ctx.device)
        weight = cfg.align.effective_weight(schedule.epoch(step))

        # 6. Forward/backward over the micro-batches; gradients sync on the last one only.
        micro = cfg.batch_size // (ctx.world_size * cfg.grad_accum)
        for a, (x, y, *stored) in enumerate(micro_batches):  # stored: REPA features kept with the data, if any
            x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
            features = stored[0].to(ctx.device, non_blocking=True) if stored else None
            x = dataset.prepare_batch(x, posterior_gen)  # latents: sample the VAE posterior; pixels: identity
            lo = a * (cfg.batch_size // cfg.grad_accum) + ctx.rank * micro
            sync = a == cfg.grad_accum - 1 or not ctx.distributed
            with (contextlib.nullcontext() if sync else train_model.no_sync()), \
                    torch.autocast(ctx.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                kw = {} if features is None else {"features": features}
                terms = objective(train_model, teacher, x, y, draws=slice_draws(draws, lo, lo + micro), **kw)
                loss = combine(terms, weight, cfg.repa.weight) / cfg.grad_accum
            scaler.scale(loss).backward()
            for k, v in terms.items():
                stats[k] = stats.get(k, 0.0) + v.detach().mean() / cfg.grad_accum

        # 7. Clip, skip non-finite steps (never written into weights), update, EMA.
        decay = ema_decay(step, decay=cfg.ema_decay, half_life_kimg=cfg.ema_half_life_kimg,
                          batch_size=cfg.batch_size, warmup=cfg.ema_warmup)
        grad_norm, was_skipped = optimizer_update(model, opt, scaler, ema, params, cfg.max_grad_norm, decay, fp16)
        skipped = skipped + was_skipped.int()  # a device tensor: read at log time, never per step
        if sync_debug:
            torch.cuda.set_sync_debug_mode("default")
        stats["grad_norm"] = stats.get("grad_norm", 0.0) + grad_norm.detach()
        stats["n"] = stats.get("n", 0) + 1
        bar.update(1)
        done = step + 1

        # 8. Log (the only place loss values are read back), sample, checkpoint.
        last = done == cfg.max_train_steps
        evaluation, t_extra = {}, time.perf_counter()  # time spent outside training steps is not in images/s
        if cfg.eval_every and (done % cfg.eval_every == 0 or last):
            if fid is not None:
                evaluation = fid()  # collective; the scores on rank 0
            elif ctx.is_main:
                evaluation = evaluate_fmnist_for_training(ema, cfg.eval_samples, ctx.device, cfg.seed)
                evaluation.pop("num_samples", None)
        t_log += time.perf_counter() - t_extra
        if evaluation and not (done % cfg.log_every == 0 or last) and metrics:
            metrics.write(json.dumps({"step": done, **evaluation, "wall_time": time.time()}) + "\n")  # own row
            tracker.scalars({f"eval/{k}": v for k, v in evaluation.items()}, done)
        if done % cfg.log_every == 0 or last:
            n = stats.pop("n")
            row = {k: float(distributed.all_reduce_mean(torch.as_tensor(v, device=ctx.device).float())) / n
                   for k, v in sorted(stats.items())}
            elapsed = time.perf_counter() - t_log
            row.update(evaluation)
            row.update(step=done, lr=lr, align_weight=weight, skipped_steps=int(skipped),
                       images_per_s=n * cfg.batch_size / max(elapsed, 1e-9))
            row["loss"] = float(combine({k: torch.tensor(row[k]) for k in ("denoise", "vb", "align", "repa")
                                         if k in row}, weight, cfg.repa.weight))
            if metrics:
                metrics.write(json.dumps({**row, "wall_time": time.time()}) + "\n")
                metrics.flush()
                tracker.scalars({("eval/" if k in evaluation else "train/") + k: v for k, v in row.items()
                                 if k != "step"}, done)
            bar.set_postfix({k: f"{row[k]:.4f}" for k in ("denoise", "align") if k in row} |
                            {"img/s": f"{row['images_per_s']:.0f}"})
            stats, t_log = {}, time.perf_counter()
        t_extra = time.perf_counter()
        if ctx.is_main and (done % cfg.sample_every == 0 or last):
            x = sample_grid(cfg, ema, dataset, sample_shape, ctx.device)
            save_grid(x, run / "samples" / f"{done:07d}.png", nrow=8, scale=max(1, 128 // x.shape[-1]))
            tracker.image("samples", run / "samples" / f"{done:07d}.png", done)
        if done % cfg.checkpoint_every == 0 or last:
            model_state, opt_state = parallel.model_and_optimizer_state(model, opt)  # collective under FSDP
            if ctx.is_main:
                save_checkpoint({"model": model_state, "ema": ema.state_dict(), "opt": opt_state,
                                 "scaler": scaler.state_dict(), "step": done, "config": cfg.to_dict()},
                                checkpoint_path(run, done))
                prune_checkpoints(run, cfg.keep_last, cfg.keep_every, protect=(checkpoint_path(run, done), ckpt_file))
            distributed.barrier()
        t_log += time.perf_counter() - t_extra
    bar.close()
    tracker.close()
    if metrics:
        metrics.close()
    if int(skipped):
        distributed.print0(f"skipped {int(skipped)} steps with a non-finite loss or gradient")
    return run
