"""Experiment tracking beside metrics.jsonl (which stays the record): TensorBoard or W&B, written by rank 0 only.

A resumed run continues the same log. TensorBoard: the same folder (RUN/tensorboard), opened with purge_step = the
resumed step + 1, so readers drop whatever an interrupted session logged after its last checkpoint (those steps are
trained again). W&B: the run id is kept in RUN/wandb_id and the run is resumed; offline unless WANDB_MODE says
otherwise (`wandb sync RUN/wandb/offline-run-*` uploads it later). WANDB_MODE=online without a reachable server or a
login warns once and logs offline.
"""
from __future__ import annotations

import importlib.util
import os
import secrets
import sys
from pathlib import Path

from ..runfolder import error_line

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
    """scalars(values, step), image(tag, png_path, step), close(). kind 'none' does nothing.

    Tracking is optional (metrics.jsonl is the record): the first failure (a read-only or full tensorboard/ folder, a
    W&B run that cannot start) prints one warning and turns tracking off for the rest of the session; training goes
    on."""

    def __init__(self, kind: str, run: Path, config: dict, start_step: int):
        self.kind, self.tb, self.wb = kind, None, None
        self.guarded(self.open, run, config, start_step)

    def guarded(self, fn, *args) -> None:
        if self.kind == "none":
            return
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 -- optional: reported once, never fatal
            print(f"warning: {self.kind} logging failed ({error_line(e)}); it is off for the rest of "
                  "this session, metrics.jsonl is still written", file=sys.stderr, flush=True)
            tb, wb, self.tb, self.wb, self.kind = self.tb, self.wb, None, None, "none"
            for close in (getattr(tb, "close", None), getattr(wb, "finish", None)):
                try:
                    if close is not None:
                        close()
                except Exception:  # noqa: BLE001 -- already reported
                    pass

    def open(self, run: Path, config: dict, start_step: int) -> None:
        kind = self.kind
        if kind == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run / "tensorboard"), purge_step=start_step + 1 if start_step else None)
        elif kind == "wandb":
            import wandb

            id_file = run / "wandb_id"
            run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
            id_file.write_text(run_id + "\n")
            args = dict(project=os.environ.get("WANDB_PROJECT", "sra"), name=run.name, id=run_id, resume="allow",
                        dir=str(run), config=config)
            mode = os.environ.get("WANDB_MODE", "offline")
            if mode not in ("offline", "disabled", "dryrun"):
                # Online: a server that cannot be reached costs WANDB_INIT_TIMEOUT seconds (ours: 30, W&B's own 90 and
                # its retries ~2 min), then the run logs offline, where `wandb sync` uploads it later.
                timeout = float(os.environ.get("WANDB_INIT_TIMEOUT", 30))
                try:
                    self.wb = wandb.init(mode=mode, settings=wandb.Settings(init_timeout=timeout), **args)
                    return
                except Exception as e:  # noqa: BLE001 -- no network, no login, a server error: all fall back alike
                    print(f"warning: W&B could not start online ({error_line(e)}); logging offline to "
                          f"{run / 'wandb'} instead (`wandb sync` uploads it later)", file=sys.stderr, flush=True)
                try:
                    wandb.teardown()  # the half-started online run would hold the run id
                except Exception:  # noqa: BLE001 -- the offline start below says whether it mattered
                    pass
                mode = "offline"
            self.wb = wandb.init(mode=mode, **args)

    def scalars(self, values: dict[str, float], step: int) -> None:
        self.guarded(self._scalars, values, step)

    def image(self, tag: str, png: Path, step: int) -> None:
        self.guarded(self._image, tag, png, step)

    def close(self) -> None:
        self.guarded(self._close)

    def _scalars(self, values: dict[str, float], step: int) -> None:
        if self.tb is not None:
            for tag, v in values.items():
                self.tb.add_scalar(tag, v, step)
            self.tb.flush()
        if self.wb is not None:
            self.wb.log(dict(values), step=step)

    def _image(self, tag: str, png: Path, step: int) -> None:
        if self.tb is not None:
            import numpy as np
            from PIL import Image

            self.tb.add_image(tag, np.asarray(Image.open(png).convert("RGB")), step, dataformats="HWC")
            self.tb.flush()
        if self.wb is not None:
            import wandb

            self.wb.log({tag: wandb.Image(str(png))}, step=step)

    def _close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wb is not None:
            self.wb.finish()
