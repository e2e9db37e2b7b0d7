"""The training loop: one top-to-bottom function. EMA, checkpoints, data order and logging live beside it."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from .. import distributed
from ..data import load_dataset
from ..data.grid import save_grid
from ..objectives import combine
from ..checkpoint import CheckpointError, checkpoint_path, prune_checkpoints, save_checkpoint, state_mismatch
from ..runfolder import Stopped, StopSignals, error_line, fault, on_rank0, say, writing
from . import parallel
from .config import TrainConfig
from .ema import ema_decay
from .features import term_resources
from .folder import RunFolder
from .guard import NonFiniteGuard
from .schedule import learning_rate
from .step import build_step, run_step
from .tracking import Tracker
from .warmstart import InitWeights, apply_init, read_init

# With --preempt-signal the ranks of a torchrun job also agree on stopping every this many steps, not only at log
# steps: a cluster warns 120 s ahead, and --log-every may be hundreds of steps. Each agreement is a 0-d all-reduce
# read on the host, so the check costs one host sync per this many steps.
PREEMPT_AGREE_EVERY = 10

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


def sample_grid(cfg: TrainConfig, process, ema, dataset, shape, device) -> torch.Tensor:
    """Fixed-noise samples from the EMA with the process's own sampler: up to 10 classes as rows, 8 columns."""
    classes = torch.linspace(0, cfg.num_classes - 1, min(cfg.num_classes, 10)).round().long()
    y = classes.repeat_interleave(8).to(device)
    noise = torch.randn((len(y), *shape), generator=distributed.generator(cfg.seed + 12345)).to(device)
    x = process.grid_sample(ema, noise, y, cfg.sample_steps)
    if hasattr(dataset, "decode"):
        x = dataset.decode(x)
    return x


def optional(what: str, work):
    """work() for something the run can do without (a sample grid, an evaluation): any failure prints one warning
    and returns None, and training goes on; it comes after the step's checkpoint, so nothing is lost either way."""
    try:
        return work()
    except Exception as e:  # noqa: BLE001 -- optional: reported, never fatal
        say(f"warning: {what} failed ({error_line(e)}); training continues")
        return None


# ----------------------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------------------

def train(cfg: TrainConfig, dataset=None) -> Path:
    """Train the resolved run spec `cfg` (`resolve_spec`) on `dataset` (None: its data_dir, loaded here)."""
    if cfg.threads:  # 0: torch's default, one per core (on a shared machine, the demo ran 10x slower with it)
        torch.set_num_threads(cfg.threads)
    ctx = distributed.init()
    # 1. Data and the run folder (locked and checked before anything is built or trained). The spec is resolved.
    if not cfg.resolved:
        raise ValueError("train() takes a resolved run spec: sra.train.config.resolve_spec(...)")
    dataset = load_dataset(cfg.data_dir) if dataset is None else dataset
    if (cfg.in_channels, cfg.input_size, cfg.input_size) != tuple(dataset.shape):
        raise ValueError(f"the spec is for {cfg.in_channels}x{cfg.input_size}x{cfg.input_size} inputs, the data is "
                         f"{'x'.join(map(str, dataset.shape))}")
    cfg.check_fits(len(dataset), ctx.world_size)
    folder = RunFolder(cfg)
    init = read_init(cfg)  # --init-from of a new run, checked before the folder is touched (None when it resumes)
    on_rank0(lambda: folder.open(cfg))
    try:
        with StopSignals(cfg.preempt_signal) as signals:
            return train_in(cfg, ctx, dataset, folder, signals, init)
    finally:
        folder.close()


def train_in(cfg: TrainConfig, ctx, dataset, folder: RunFolder, signals: StopSignals,
             init: InitWeights | None = None) -> Path:
    run = folder.path
    torch.manual_seed(cfg.seed)

    # 2. The step: process, objective (the terms and their modules), model, EMA (= SRA teacher), wrappers, optimizer,
    # loss scaler; `sra bench` builds and runs the same.
    built = build_step(cfg, ctx, resources=term_resources(cfg, dataset, ctx.device))
    model, ema, opt, scaler, objective, process = (built.model, built.ema, built.opt, built.scaler, built.objective,
                                                   built.process)
    terms = objective.modules

    # 3. Resume: the same command continues from the newest readable checkpoint; the log is cut back to its step. A
    # new run with --init-from starts from that file's weights instead (step 0; the optimizer stays fresh).
    start, stats = 0, {}
    ckpt_file, ck = folder.resume_from()
    if ck is not None:
        problem = state_mismatch(ema.state_dict(), ck.get("ema", {})) if isinstance(ck.get("ema"), dict) else \
            "it holds no 'ema' weights"
        try:
            if problem:
                raise ValueError(problem)
            parallel.load_model_and_optimizer_state(model, opt, ck["model"], ck["opt"], terms)
            terms.load_state_dict(ck.get("terms", {}))
            ema.load_state_dict(ck["ema"])
            scaler.load_state_dict(ck["scaler"])
        except (KeyError, RuntimeError, ValueError) as e:
            raise CheckpointError(f"{ckpt_file} does not fit this run: {str(e).splitlines()[0]}") from None
        start = int(ck["step"])
        if start > cfg.max_train_steps:  # before config.json is rewritten: the run stays as it was
            raise ValueError(f"--max-train-steps {cfg.max_train_steps} is below the step this run reached ({start}, "
                             f"{ckpt_file}); give at least {start}")
        planned = (ck.get("config") or {}).get("max_train_steps", cfg.max_train_steps)
        if cfg.lr_schedule != "constant" and planned != cfg.max_train_steps:  # it sets where the decay ends
            raise ValueError(f"--max-train-steps {cfg.max_train_steps} would move the end of this run's "
                             f"--lr-schedule {cfg.lr_schedule} decay (planned for {planned} steps) and jump its "
                             f"learning rate; give {planned}, or train further in a new run with --init-from {run}")
        log_state = ck.get("log", {})  # the partial logging interval, so its row equals an uninterrupted run's
        stats = {k: v.to(ctx.device) for k, v in log_state.get("stats", {}).items()}
        stats.update({"n": log_state["n"]} if log_state.get("n") else {})
        distributed.print0(f"resuming {run} from step {start}" if start < cfg.max_train_steps else
                           f"{run} has reached --max-train-steps {start}: nothing to train")
    elif init is not None:
        apply_init(init, model, ema)
        distributed.print0(f"starting {run} from the weights of {init.source} (step 0, a fresh optimizer)")
    guard = NonFiniteGuard(cfg.max_nonfinite_steps, ctx.device, ck.get("nonfinite") if ck else None)
    folder.begin(cfg, start)
    last_good = ckpt_file

    # 4. Data order.
    schedule = BatchSchedule(len(dataset), cfg.batch_size, cfg.seed)
    sample_shape = dataset.shape
    metrics = open(run / "metrics.jsonl", "a") if ctx.is_main else None
    tracker = Tracker(cfg.report_to if ctx.is_main else "none", run, cfg.to_dict(), start)
    fid = None
    if cfg.eval_every and cfg.eval_ref:  # FID/IS on real data: every rank samples its share
        from ..evaluation.training_fid import TrainingFID
        fid = TrainingFID(ema, process=process, run_config=cfg.to_dict(), reference=cfg.eval_ref,
                          num_samples=cfg.eval_samples, num_steps=cfg.sample_steps, seed=cfg.seed,
                          batch_size=max(1, cfg.batch_size // ctx.world_size), inception_weights=cfg.eval_inception,
                          device=ctx.device)
    elif cfg.eval_every:
        if getattr(dataset, "name", "") != "fashion-mnist":
            raise ValueError("--eval-every needs Fashion-MNIST data (FD-FMNIST is its metric) or --eval-ref REF (FID)")
        from ..evaluation.fmnist import evaluate_fmnist_for_training, fmnist_scorer
        if ctx.is_main:
            fmnist_scorer(ctx.device)  # train/cache the classifier now, not in the middle of the run
    t_log = time.perf_counter()

    def write_row(row: dict) -> None:
        if metrics:
            with writing(metrics.name):  # a full disk: one line naming the file (the checkpoints are intact)
                metrics.write(json.dumps({**row, "wall_time": time.time()}) + "\n")
                metrics.flush()

    def checkpoint(done: int) -> Path:
        model_state, opt_state = parallel.model_and_optimizer_state(model, opt, terms)  # collective under FSDP
        path = checkpoint_path(run, done)
        if ctx.is_main:
            log_state = {"stats": {k: torch.as_tensor(v).detach().cpu() for k, v in stats.items() if k != "n"},
                         "n": stats.get("n", 0)}
            save_checkpoint({"model": model_state, "ema": ema.state_dict(), "terms": terms.state_dict(), "opt": opt_state,
                             "scaler": scaler.state_dict(), "step": done, "config": cfg.to_dict(),
                             "nonfinite": guard.state_dict(), "log": log_state}, path)
            prune_checkpoints(run, cfg.keep_last, cfg.keep_every, protect=(path,))  # `path` is complete on disk
        distributed.barrier()
        return path

    from tqdm.auto import tqdm
    # a finished run's rerun gets no bar: tqdm would draw it twice (when opened and when closed) for no step
    bar = tqdm(total=cfg.max_train_steps, initial=start,
               disable=not (ctx.is_main and cfg.progress and start < cfg.max_train_steps),
               desc=f"{cfg.exp_name}", unit="step", dynamic_ncols=True)
    # SRA_SYNC_DEBUG=1 on CUDA: any host-device synchronisation inside steps 5-7 raises (from the second step on; the
    # first initialises libraries and caches). The step is meant to be free of them (docs/PERFORMANCE.md).
    sync_debug = ctx.device.type == "cuda" and os.environ.get("SRA_SYNC_DEBUG") == "1"
    for step, micro_batches in local_batches(dataset, schedule, start, cfg.max_train_steps, ctx, cfg):
        if sync_debug and step > start:
            torch.cuda.set_sync_debug_mode("error")
        # 5. Learning rate (linear warm-up, then --lr-schedule) and the step's draws for the whole global batch.
        lr = learning_rate(step, lr=cfg.lr, warmup=cfg.lr_warmup_steps, schedule=cfg.lr_schedule,
                           total=cfg.max_train_steps, lr_min=cfg.lr_min)
        for group in opt.param_groups:
            group["lr"] = lr
        gen = distributed.generator(distributed.step_seed(cfg.seed, step), ctx.device)
        draws = objective.draw(cfg.batch_size, sample_shape, ctx.device, gen)
        posterior_gen = distributed.generator(distributed.step_seed(cfg.seed, step, 2 + ctx.rank), ctx.device)
        weights = objective.weights(schedule.epoch(step), cfg.input_size)

        # 6-7. The step body (step.run_step): forward/backward over the micro-batches, gradients synced on the last
        # one; clip, skip non-finite steps (never written into weights), update, EMA. Counted on the device.
        micro = cfg.batch_size // (ctx.world_size * cfg.grad_accum)
        batches = []
        for a, (x, y, *stored) in enumerate(micro_batches):  # stored: REPA features kept with the data, if any
            x, y = x.to(ctx.device, non_blocking=True), y.to(ctx.device, non_blocking=True)
            features = stored[0].to(ctx.device, non_blocking=True) if stored else None
            x = dataset.prepare_batch(x, posterior_gen)  # latents: sample the VAE posterior; pixels: identity
            batches.append((x, y, features, a * (cfg.batch_size // cfg.grad_accum) + ctx.rank * micro))
        decay = ema_decay(step, decay=cfg.ema_decay, half_life_kimg=cfg.ema_half_life_kimg,
                          batch_size=cfg.batch_size, warmup=cfg.ema_warmup)
        grad_norm, nonfinite = run_step(built, batches, draws, weights, decay, cfg.max_grad_norm, stats)
        guard.update(nonfinite)
        if sync_debug:
            torch.cuda.set_sync_debug_mode("default")
        stats["grad_norm"] = stats.get("grad_norm", 0.0) + grad_norm.detach()
        stats["n"] = stats.get("n", 0) + 1
        bar.update(1)
        done = step + 1
        fault("step")  # tests: SRA_FAULT=kill:step:N

        # 8. Log (the only place loss values are read back), stop on divergence, checkpoint; then what is optional
        # (a stop request, the sample grid, the evaluation), so that a failure there loses no training.
        last = done == cfg.max_train_steps
        log_step, ckpt_step = done % cfg.log_every == 0 or last, done % cfg.checkpoint_every == 0 or last
        stop, preempted = signals.received is not None, signals.preempted
        if ctx.distributed:  # every rank must agree; ask only where the loop syncs anyway (and every few steps
            # when a preemption warning may come: PREEMPT_AGREE_EVERY)
            agree = log_step or (signals.preempt is not None and done % PREEMPT_AGREE_EVERY == 0)
            stop = agree and distributed.any_rank(stop)
            preempted = stop and distributed.any_rank(preempted)  # collective on every rank: `stop` agrees
        if log_step:
            n = stats.pop("n")
            row = {k: float(distributed.all_reduce_mean(torch.as_tensor(v, device=ctx.device).float())) / n
                   for k, v in sorted(stats.items())}
            elapsed = time.perf_counter() - t_log
            row.update(step=done, lr=lr, align_weight=weights.get("align", 0.0), skipped_steps=int(guard.total),
                       images_per_s=n * cfg.batch_size / max(elapsed, 1e-9))
            row["loss"] = float(combine({k: torch.tensor(row[k]) for k in objective.names}, weights))
            write_row(row)
            tracker.scalars({"train/" + k: v for k, v in row.items() if k != "step"}, done)
            bar.set_postfix({k: f"{row[k]:.4f}" for k in ("denoise", "align") if k in row} |
                            {"img/s": f"{row['images_per_s']:.0f}"})
            stats, t_log = {}, time.perf_counter()
        t_extra = time.perf_counter()  # time spent outside training steps is not in images/s
        if log_step or ckpt_step or stop or last or done % cfg.sample_every == 0 or \
                (cfg.eval_every and done % cfg.eval_every == 0):
            built.ema_ready()  # what follows reads the EMA: the update in flight (if overlapped) is applied first
        if log_step or ckpt_step or stop:
            guard.check(done, (model, ema), last_good)
        if ckpt_step or stop:
            last_good = checkpoint(done)
        if stop:
            bar.close()
            if preempted:  # the exit status a requeue script tests (StopSignals.PREEMPTED)
                raise Stopped(f"preempted by {signals.preempt} after step {done}; checkpoint {last_good} saved; exit "
                              f"status {StopSignals.PREEMPTED}: run the same command to continue (a requeued job "
                              "does)", StopSignals.PREEMPTED)
            raise Stopped(f"stopped by {signals.received or 'a signal'} after step {done}; checkpoint {last_good} "
                          "saved; run the same command to resume", signals.exit_code if signals.received else 143)
        # Optional work: a failure prints one warning and training goes on (the step's checkpoint, if due, is saved).
        if ctx.is_main and (done % cfg.sample_every == 0 or last):
            grid = run / "samples" / f"{done:07d}.png"

            def write_grid() -> Path:
                x = sample_grid(cfg, process, ema, dataset, sample_shape, ctx.device)
                save_grid(x, grid, nrow=8, scale=max(1, 128 // x.shape[-1]))
                return grid

            if optional(f"the sample grid of step {done}", write_grid):
                tracker.image("samples", grid, done)
        if cfg.eval_every and (done % cfg.eval_every == 0 or last):
            def evaluate() -> dict:
                if fid is not None:
                    return fid()  # collective; the scores on rank 0
                if not ctx.is_main:
                    return {}
                scores = evaluate_fmnist_for_training(ema, process, cfg.eval_samples, ctx.device, cfg.seed)
                scores.pop("num_samples", None)
                return scores

            evaluation = optional(f"the evaluation of step {done}", evaluate)
            if evaluation:
                write_row({"step": done, **evaluation})  # its own row: written after the step's checkpoint
                tracker.scalars({f"eval/{k}": v for k, v in evaluation.items()}, done)
        t_log += time.perf_counter() - t_extra
    bar.close()
    tracker.close()
    if metrics:
        metrics.close()
    if int(guard.total):
        distributed.print0(f"skipped {int(guard.total)} steps with a non-finite loss or gradient")
    return run
