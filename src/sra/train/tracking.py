"""Experiment tracking beside metrics.jsonl (which stays the record): TensorBoard or W&B, written by rank 0 only.

A resumed run continues the same log. TensorBoard: the same folder (RUN/tensorboard), opened with purge_step = the
resumed step + 1, so readers drop whatever an interrupted session logged after its last checkpoint (those steps are
trained again). W&B: the run id is kept in RUN/wandb_id and the run is resumed; offline unless WANDB_MODE says
otherwise (`wandb sync RUN/wandb/offline-run-*` uploads it later).
"""
from __future__ import annotations

import importlib.util
import os
import secrets
from pathlib import Path

REPORTERS = ("tensorboard", "wandb", "none")


def installed(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def default_reporter() -> str:
    """TensorBoard where it is installed, else nothing (metrics.jsonl is always written)."""
    return "tensorboard" if installed("tensorboard") else "none"


def check_reporter(kind: str) -> None:
    package = {"tensorboard": "tensorboard", "wandb": "wandb"}.get(kind)
    if package and not installed(package):
        raise ValueError(f"--report-to {kind} needs the {package} package: pip install {package} "
                         f"(or pip install 'sra-diffusion[track]'), or use --report-to none")


class Tracker:
    """scalars(values, step), image(tag, png_path, step), close(). kind 'none' does nothing."""

    def __init__(self, kind: str, run: Path, config: dict, start_step: int):
        self.kind, self.tb, self.wb = kind, None, None
        if kind == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run / "tensorboard"), purge_step=start_step + 1 if start_step else None)
        elif kind == "wandb":
            import wandb

            id_file = run / "wandb_id"
            run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
            id_file.write_text(run_id + "\n")
            self.wb = wandb.init(project=os.environ.get("WANDB_PROJECT", "sra"), name=run.name, id=run_id,
                                 resume="allow", dir=str(run), config=config,
                                 mode=os.environ.get("WANDB_MODE", "offline"))

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.tb is not None:
            for tag, v in values.items():
                self.tb.add_scalar(tag, v, step)
            self.tb.flush()
        if self.wb is not None:
            self.wb.log(dict(values), step=step)

    def image(self, tag: str, png: Path, step: int) -> None:
        if self.tb is not None:
            import numpy as np
            from PIL import Image

            self.tb.add_image(tag, np.asarray(Image.open(png).convert("RGB")), step, dataformats="HWC")
            self.tb.flush()
        if self.wb is not None:
            import wandb

            self.wb.log({tag: wandb.Image(str(png))}, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wb is not None:
            self.wb.finish()
