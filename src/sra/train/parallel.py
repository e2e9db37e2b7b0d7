"""Data parallelism applied from outside the model: DDP, or FSDP2 (`fully_shard`) for the largest models, plus the
state-dict plumbing that makes checkpoints independent of how (and on how many ranks) a run was sharded."""
from __future__ import annotations

import torch

from .. import distributed


def shard_fsdp(model: torch.nn.Module, mixed_precision: str) -> None:
    """fully_shard each block, the projection head (it is called outside the root forward) and the root, in place.
    bf16/fp16: parameters gathered in that dtype, gradients reduced in fp32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
    mp = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32) if dtype else MixedPrecisionPolicy()
    for block in model.blocks:
        fully_shard(block, mp_policy=mp)
    fully_shard(model.ap_head, mp_policy=mp)
    fully_shard(model, mp_policy=mp)


def wrap(model: torch.nn.Module, ctx, fsdp: bool, mixed_precision: str) -> torch.nn.Module:
    """The module to call in training: FSDP shards `model` in place; DDP wraps it; one process returns it as is."""
    if fsdp and torch.distributed.is_initialized():  # torchrun, also with one process; a plain run: no sharding
        shard_fsdp(model, mixed_precision)
        return model
    if ctx.distributed:
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    return model


class CompiledTeacher:
    """The SRA teacher with `forward_features` under torch.compile (`--compile`). Left eager, the teacher made a compiled
    SiT-XL/2 step cost 1.32x plain instead of the 1.25x of its arithmetic (one H200, docs/PERFORMANCE.md). Only that
    call is compiled: the module stays eager for EMA updates, saving and sampling; its weights are read at each call,
    so in-place EMA updates are seen."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        self.forward_features = torch.compile(module.forward_features)


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def full_params(model: torch.nn.Module) -> list[torch.Tensor]:
    """The unsharded parameters, in order (an all-gather per parameter under FSDP)."""
    from torch.distributed.tensor import DTensor

    with torch.no_grad():
        return [p.full_tensor().requires_grad_(p.requires_grad) if isinstance(p, DTensor) else p
                for p in model.parameters()]


def full_value(x: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return x.full_tensor() if isinstance(x, DTensor) else x


def _trainable_names(model, terms=None) -> list[str]:
    """The optimizer's parameters by name, in its order: the model's trainable ones, then the terms' ("terms.*")."""
    extra = [f"terms.{n}" for n, p in terms.named_parameters() if p.requires_grad] if terms is not None else []
    return [n for n, p in model.named_parameters() if p.requires_grad] + extra


def model_and_optimizer_state(model, opt, terms=None) -> tuple[dict, dict]:
    """Full (unsharded) state dicts on CPU, the optimizer's keyed by parameter name (as torch's distributed
    checkpoint writes it), so that a checkpoint resumes on any world size, sharded or not. `terms`: the objective's
    modules (their parameters follow the model's in the optimizer; unsharded). Collective under FSDP: every rank must
    call it."""
    if not is_sharded(model):
        names = _trainable_names(model, terms)
        sd = opt.state_dict()
        return model.state_dict(), {
            "state": {names[i]: v for i, v in sd["state"].items()},
            "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in sd["param_groups"]]}
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=opts), get_optimizer_state_dict(model, opt, options=opts)


def load_model_and_optimizer_state(model, opt, model_state: dict, opt_state: dict, terms=None) -> None:
    if not is_sharded(model):
        model.load_state_dict(model_state)
        index = {n: i for i, n in enumerate(_trainable_names(model, terms))}
        missing = [n for g in opt_state["param_groups"] for n in g["params"] if n not in index]
        if missing or len(index) != sum(len(g["params"]) for g in opt_state["param_groups"]):
            raise ValueError(f"optimizer state does not match the model's trainable parameters ({missing[:1]})")
        opt.load_state_dict({
            "state": {index[n]: v for n, v in opt_state["state"].items()},
            "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in opt_state["param_groups"]]})
        return
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, set_model_state_dict,
                                                         set_optimizer_state_dict)

    opts = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, model_state, options=opts)
    set_optimizer_state_dict(model, opt, opt_state, options=opts)
    distributed.barrier()
