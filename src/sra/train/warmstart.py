"""`--init-from`: a new run that starts from another run's weights (fine-tuning, a new schedule after a finished run,
the authors' released checkpoints). It is a new run: step 0, a fresh optimizer and loss scaler, the terms' own modules
(REPA's projector) freshly initialised; only the backbone (with its SRA head) and its EMA are copied.

Which weights: the trained model takes the file's online weights ('model') where it has them, else its EMA (an `sra
export` holds only the EMA); the EMA takes the file's EMA. Both are what the source was when it stopped: the student
continues from where it was, and its SRA teacher (the EMA) is the one it had been trained against, not a copy of
itself. Read and checked against the run's architecture before the run folder is touched (`read_init`); copied after
the step is built, before its first update (`apply_init`). A run that resumes never reads the file: its own
checkpoint holds what the next step needs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

from .. import distributed
from ..checkpoint import CheckpointError, checkpoint_files, state_mismatch
from ..models.loading import load_model
from . import parallel
from .config import TrainConfig
from .step import spec_model


@dataclass
class InitWeights:
    source: Path  # the file read (a run folder's newest checkpoint, an export's model.safetensors, the file itself)
    model: dict   # for the trained model: the file's online weights, its EMA where it has none
    ema: dict     # for the EMA: the file's EMA weights


def run_architecture(cfg: TrainConfig) -> torch.nn.Module:
    """The run's model on the meta device: its parameter names and shapes, no memory and no initialisation cost."""
    with torch.device("meta"):
        return spec_model(cfg)


def _read(cfg: TrainConfig) -> InitWeights:
    online, ema = load_model(cfg.init_from, weights="model"), load_model(cfg.init_from, weights="ema")
    problem = state_mismatch(run_architecture(cfg).state_dict(), online.model.state_dict())
    if problem:
        raise CheckpointError(f"--init-from {online.source} is not a {cfg.model} of this run's shape (depth "
                              f"{cfg.model_depth}, {cfg.in_channels}x{cfg.input_size}x{cfg.input_size} inputs, "
                              f"{cfg.num_classes} classes): {problem}")
    return InitWeights(online.source, online.model.state_dict(), ema.model.state_dict())


def read_init(cfg: TrainConfig) -> InitWeights | None:
    """The weights `--init-from` names, checked against the run's architecture; None without it, or when the run
    folder holds checkpoints (the run resumes and its checkpoint wins). Every rank reads the file (each needs the EMA);
    when any rank cannot, every rank raises, the others with a pointer to its message."""
    if cfg.init_from is None or checkpoint_files(Path(cfg.output_dir) / cfg.exp_name):
        return None
    init, error, failed = distributed.failed_anywhere(_read, cfg)
    if error is not None:
        raise error
    if failed:
        raise CheckpointError(f"another process could not read --init-from {cfg.init_from} (its message says why)")
    return init


def apply_init(init: InitWeights, model: torch.nn.Module, ema: torch.nn.Module) -> None:
    """Copy the weights into the built step's model (in place: DDP and torch.compile hold the same parameters; under
    FSDP each rank keeps its shard of them) and its EMA. Every rank copies the same file, so the ranks agree."""
    if parallel.is_sharded(model):
        set_model_state_dict(model, init.model, options=StateDictOptions(full_state_dict=True))
    else:
        model.load_state_dict(init.model)
    ema.load_state_dict(init.ema)
