"""The training step, built once: the model, its EMA (= the SRA teacher), the wrappers applied from outside (DDP/FSDP,
torch.compile), the optimizer, the loss scaler and the objective. The loop and `sra bench` both build it with
`build_step` and update with `optimizer_update`, so that the benchmark times the code that trains."""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from .. import distributed
from ..models import build_model
from ..models.presets import parse_name
from ..objectives import Objective
from . import parallel
from .config import TrainConfig
from .ema import update_ema


def build_objective(cfg: TrainConfig, encoder=None) -> Objective:
    """The loss of the config: the family's process and the active terms; `encoder`: REPA's frozen encoder as a
    callable clean inputs -> token-grid features, when it runs at train time."""
    return Objective(cfg.process, cfg.align, cfg.mix, parse_name(cfg.model)[2], cfg.repa, encoder, cfg.disp)


@dataclass
class Step:
    model: torch.nn.Module        # the uncompiled, unwrapped module: EMA updates, checkpoints, evaluation
    ema: torch.nn.Module          # the EMA copy: the sampling model and, by default, the SRA teacher
    train_model: torch.nn.Module  # what the objective calls: `model` under DDP/FSDP and torch.compile
    teacher: object               # the SRA teacher (`ema`, or `model` for an online teacher), its forward compiled
    opt: torch.optim.Optimizer    # AdamW over the trainable parameters
    scaler: torch.amp.GradScaler  # loss scaling: on with fp16 only, a pass-through otherwise
    objective: Objective
    amp_dtype: torch.dtype | None  # the student's autocast dtype (None: fp32)

    @property
    def fp16(self) -> bool:
        return self.amp_dtype == torch.float16

    @property
    def params(self) -> list[torch.Tensor]:
        return [p for p in self.model.parameters() if p.requires_grad]


def build_step(cfg: TrainConfig, ctx: distributed.Context, *, encoder=None, z_dim: int | None = None,
               adamw: str = "fused") -> Step:
    """The step of a resolved config on `ctx.device`. `z_dim`: the REPA encoder's feature size, which adds the REPA
    projector to the model; `encoder`: REPA's encoder run on each batch (None: features come with the data).
    `adamw`: fused (one kernel for all parameters, 4.5x faster than the default on CPU; off under FSDP), foreach, or
    default (torch's choice). Draws from torch's global generator: the caller seeds it."""
    repa_kw = {} if z_dim is None else dict(z_dims=(z_dim,), projector_dim=cfg.repa.projector_dim)
    depth_kw = {} if cfg.depth is None else dict(depth=cfg.depth)
    model = build_model(cfg.model, input_size=cfg.input_size, in_channels=cfg.in_channels,
                        num_classes=cfg.num_classes, **depth_kw, **repa_kw).to(ctx.device)
    if not (cfg.align.active and cfg.align.use_head):
        model.ap_head.requires_grad_(False)  # unused head: no gradient, no optimizer state, no DDP complaints
    model.grad_checkpointing = cfg.activation_checkpointing
    ema = copy.deepcopy(model).requires_grad_(False).eval()  # unsharded on every rank, also under FSDP
    # Wrappers from outside the model: FSDP shards `model` in place, DDP wraps it, compile wraps the result.
    train_model = parallel.wrap(model, ctx, cfg.fsdp, cfg.mixed_precision)
    if cfg.compile:
        train_model = torch.compile(train_model)
    impl = {"fused": {"fused": not parallel.is_sharded(model)}, "foreach": {"foreach": True}, "default": {}}[adamw]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, betas=cfg.adam_betas,
                            weight_decay=cfg.weight_decay, **impl)
    scaler = torch.amp.GradScaler(ctx.device.type, enabled=cfg.mixed_precision == "fp16")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.mixed_precision)
    teacher = ema if cfg.align.teacher == "ema" else model  # "online": the trained weights, no gradient
    if cfg.compile and cfg.align.active:
        teacher = parallel.CompiledTeacher(teacher)
    return Step(model, ema, train_model, teacher, opt, scaler, build_objective(cfg, encoder), amp_dtype)


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
