"""The training step: built once (`build_step`: the process, the objective with its terms' modules, the model, its
EMA (= the SRA teacher), the wrappers applied from outside (DDP/FSDP, torch.compile), the optimizer and the loss
scaler), and run by one body (`run_step`: forward/backward over the micro-batches, then `optimizer_update`). The loop
and `sra bench` both build and run it here, so the benchmark times the code that trains."""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch

from .. import distributed
from .. import process as processes
from ..models import build_model
from ..objectives import Objective, combine, slice_draws
from . import parallel
from .config import TrainConfig
from .ema import EMAReadyTeacher, EMAUpdater
from .fp8 import Fp8Teacher


def spec_model(spec: TrainConfig) -> torch.nn.Module:
    """The backbone a resolved spec trains (its preset with the data's shape, classes and --depth), freshly
    initialised from torch's global generator (under `torch.device("meta")`: shapes only)."""
    depth = {} if spec.depth is None else dict(depth=spec.depth)
    return build_model(spec.model, input_size=spec.input_size, in_channels=spec.in_channels,
                       num_classes=spec.num_classes, **depth)


def build_objective(spec: TrainConfig, process, resources: dict | None = None) -> Objective:
    """The loss of a spec: its process and its active terms. `resources`: what terms build themselves from (REPA:
    `encoder` run at train time or None, `z_dim`, `hidden_size`)."""
    return Objective(process, spec.terms, spec.mix, spec.patch_size, resources)


@dataclass
class Step:
    process: object               # the run's process (sra.process), built once from the spec
    model: torch.nn.Module        # the uncompiled, unwrapped module: EMA updates, checkpoints, evaluation
    ema: torch.nn.Module          # the EMA copy: the sampling model and, by default, the SRA teacher
    train_model: torch.nn.Module  # what the objective calls: `model` under DDP/FSDP and torch.compile
    teacher: object               # the terms' teacher (`ema`, or `model` for an online one), its forward compiled
    opt: torch.optim.Optimizer    # AdamW over the trainable parameters (the model's, then the terms')
    scaler: torch.amp.GradScaler  # loss scaling: on with fp16 only, a pass-through otherwise
    objective: Objective          # the process and the terms; `objective.modules`: the terms' parameters
    amp_dtype: torch.dtype | None  # the student's autocast dtype (None: fp32)
    distributed: bool = False     # several ranks: gradients sync on the last micro-batch
    ema_updates: EMAUpdater | None = None  # the EMA update, serial or overlapped (`ema_ready` before reading `ema`)

    def __post_init__(self):
        if self.ema_updates is None:  # a step built by hand updates its EMA serially
            self.ema_updates = EMAUpdater(self.ema)

    def ema_ready(self) -> torch.nn.Module:
        """The EMA with every update applied: call before reading it (checkpoints, grids, evaluation)."""
        self.ema_updates.wait()
        return self.ema

    @property
    def fp16(self) -> bool:
        return self.amp_dtype == torch.float16

    @property
    def params(self) -> list[torch.Tensor]:
        """What is clipped and stepped: the model's trainable parameters, then the terms'."""
        return [p for p in (*self.model.parameters(), *self.objective.modules.parameters()) if p.requires_grad]

    def autocast(self):
        return torch.autocast(self.model.pos_embed.device.type, dtype=self.amp_dtype,
                              enabled=self.amp_dtype is not None)


def build_step(spec: TrainConfig, ctx: distributed.Context, *, resources: dict | None = None,
               adamw: str = "fused", ema_overlap: bool | None = None) -> Step:
    """The step of a resolved spec on `ctx.device`. `resources`: as for `build_objective` (the model's width is added
    here). `adamw`: fused (one kernel for all parameters, 4.5x faster than the default on CPU; off under FSDP), foreach,
    or default (torch's choice). `ema_overlap`: run each EMA update beside the next step's student forward (unset: on
    CUDA without FSDP; see `ema.EMAUpdater`). Draws from torch's global generator: the caller seeds it."""
    if not spec.resolved:
        raise ValueError("build_step needs a resolved run spec (sra.train.config.resolve_spec)")
    process = processes.from_config(spec.process)
    model = spec_model(spec).to(ctx.device)
    objective = build_objective(spec, process, {**(resources or {}), "hidden_size": model.hidden_size,
                                                "in_channels": model.in_channels, "device": ctx.device})
    objective.modules.to(ctx.device)
    if len(objective.modules) and spec.fsdp:
        raise ValueError(f"--fsdp shards the backbone only; the parameters of {', '.join(objective.modules)} would "
                         "not be synchronised (train it with DDP)")
    objective.prepare(model)  # unused backbone parts (SRA's head): no gradient, no optimizer state
    model.grad_checkpointing = spec.activation_checkpointing
    ema = copy.deepcopy(model).requires_grad_(False).eval()  # unsharded on every rank, also under FSDP
    # Wrappers from outside the model: FSDP shards `model` in place, DDP wraps it, compile wraps the result.
    train_model = parallel.wrap(model, ctx, spec.fsdp, spec.mixed_precision)
    if spec.compile:
        train_model = torch.compile(train_model)
    impl = {"fused": {"fused": not parallel.is_sharded(model)}, "foreach": {"foreach": True}, "default": {}}[adamw]
    groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    if len(objective.modules):
        groups.append({"params": list(objective.modules.parameters())})
    opt = torch.optim.AdamW(groups, lr=spec.lr, betas=spec.adam_betas, weight_decay=spec.weight_decay, **impl)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=spec.mixed_precision == "fp16")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(spec.mixed_precision)
    if ema_overlap is None:
        ema_overlap = ctx.device.type == "cuda" and not parallel.is_sharded(model)  # FSDP's gathered weights are transient
    updates = EMAUpdater(ema, ema_overlap, ctx.device)
    teacher = objective.teacher(model, ema)
    if teacher is not None and objective.fp8_teacher_depth():
        teacher = Fp8Teacher(teacher, objective.fp8_teacher_depth())
        updates.after.append(teacher.refresh)  # its FP8 weights: cast once per update, not per forward
    if spec.compile and teacher is not None:
        teacher = parallel.CompiledTeacher(teacher)
    if teacher is not None:
        teacher = EMAReadyTeacher(teacher, updates)
    return Step(process, model, ema, train_model, teacher, opt, scaler, objective, amp_dtype, ctx.distributed, updates)


def run_step(s: Step, batches: list, draws: dict, weights: dict, decay: float, max_grad_norm: float,
             stats: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step: forward/backward over the micro-batches (x, y, features or None, offset of its samples in
    the step's draws), gradients synced on the last one only, then `optimizer_update`. Each term's batch mean, divided
    by the number of micro-batches, is added to `stats` (on the device: nothing here waits for it). Returns (gradient
    norm, skipped) as 0-d device tensors."""
    accum = len(batches)
    for a, (x, y, features, lo) in enumerate(batches):
        sync = a == accum - 1 or not s.distributed
        with (contextlib.nullcontext() if sync else s.train_model.no_sync()), s.autocast():
            terms = s.objective(s.train_model, s.teacher, x, y, draws=slice_draws(draws, lo, lo + x.shape[0]),
                                features=features)
            loss = combine(terms, weights) / accum
        s.scaler.scale(loss).backward()
        for k, v in terms.items():
            stats[k] = stats.get(k, 0.0) + v.detach().mean() / accum
    if s.distributed and len(s.objective.modules):  # the terms' parameters live outside DDP: average their gradients
        for p in s.objective.modules.parameters():
            if p.grad is not None:
                p.grad.copy_(distributed.all_reduce_mean(p.grad))
    return optimizer_update(s, max_grad_norm, decay)


def optimizer_update(s: Step, max_grad_norm: float, decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Unscale and clip the gradients; step the optimizer unless they are non-finite; update the EMA; clear the
    gradients. Returns (gradient norm, skipped) as 0-d device tensors: nothing here waits for the device.

    The skip decision stays on the device (docs/PERFORMANCE.md): a fused optimizer reads `found_inf` and leaves weights,
    moments and step count unchanged when it is 1 (this is how GradScaler drives fused optimizers; with fp16 the scaler
    sets it itself). After a skipped step the weights are unchanged, so the EMA update only moves the EMA toward the
    same finite weights. Only a non-fused optimizer (FSDP) needs the host to decide."""
    opt, scaler = s.opt, s.scaler
    s.ema_updates.wait()  # an update in flight reads the weights this step is about to change
    scaler.unscale_(opt)
    grad_norm = parallel.full_value(torch.nn.utils.clip_grad_norm_(s.params, max_grad_norm))
    skipped = ~torch.isfinite(grad_norm)
    if s.fp16:
        scaler.step(opt)  # the scaler finds the non-finite gradients and skips the step itself
    elif opt.defaults.get("fused"):
        opt.found_inf = skipped.float()
        opt.step()
    elif not skipped:  # the one host sync, non-fused optimizers only
        opt.step()
    s.ema_updates.update(parallel.full_params(s.model), decay)
    scaler.update()
    opt.zero_grad(set_to_none=True)
    return grad_norm, skipped
