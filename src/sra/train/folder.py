"""The training run folder OUTPUT_DIR/EXP_NAME: config.json, metrics.jsonl, checkpoints/NNNNNNN.pt, samples/.

`RunFolder` does the checks before any training (the folder holds this run, every folder is writable), removes stale
temporary files, picks the checkpoint to resume from and cuts metrics.jsonl back to it. The file primitives it uses
(lock, atomic writes) are sra.runfolder's; what a crash may lose is listed in docs/RELIABILITY.md.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from .. import distributed
from ..checkpoint import CheckpointError, checkpoint_files, load_checkpoint
from ..data.pixels import FASHION_MNIST_DIRS, fashion_mnist_available
from ..runfolder import (RUN_RECORDS, FolderLock, RunFolderError, atomic_write, check_writable, remove_temporary,
                         truncate_log)
from .config import config_differences

OURS = set(RUN_RECORDS) | {"tensorboard", "wandb", "wandb_id"}  # what a run folder may hold before config.json


def same_data(a: str | None, b: str | None) -> bool:
    """Two --data-dir values name the same data: equal names ('digits', None) or the same folder, however spelled;
    unset names the default data (Debian's Fashion-MNIST folder where installed, else 'digits')."""
    if a == b:
        return True
    if a is None or b is None:
        default = FASHION_MNIST_DIRS[0] if fashion_mnist_available() else "digits"
        a, b = (default if v is None else v for v in (a, b))
        if a == b:
            return True
    if a is None or b is None:
        return False
    return os.path.realpath(a) == os.path.realpath(b)


class RunFolder:
    """OUTPUT_DIR/EXP_NAME of one training run. `open` (rank 0, before any model is built) locks it and checks it;
    `resume_from` picks the checkpoint; `begin` writes config.json and cuts metrics.jsonl back to the start step."""

    def __init__(self, cfg):
        self.path = Path(cfg.output_dir) / cfg.exp_name
        self.checkpoints, self.samples, self.metrics = (self.path / "checkpoints", self.path / "samples",
                                                        self.path / "metrics.jsonl")
        self.lock: FolderLock | None = None
        self.recorded: dict | None = None  # config.json of the run already in the folder (else its checkpoint's)
        self._resume: tuple[Path | None, dict | None] | None = None  # read by `open` for its checks, kept for resume

    def open(self, cfg) -> None:
        run = self.path
        if run.exists() and not run.is_dir():
            raise RunFolderError(f"run folder {run} is a file; use another --exp-name")
        if run.is_dir() and not (run / "config.json").exists() and set(os.listdir(run)) - OURS:
            raise RunFolderError(f"run folder {run} exists and is not an sra run; use another --exp-name")
        check_writable(run)
        self.lock = FolderLock(run).acquire()
        try:
            # A record that is a symbolic link leads into another folder: a linked checkpoints/ resumed another run
            # and wrote into it. The run folder itself may be a link (runs/x -> /scratch/x): all of it moves together.
            for name in RUN_RECORDS[1:] + ("tensorboard",):
                if (run / name).is_symlink():
                    raise RunFolderError(f"{run / name} is a symbolic link; a run folder's records must be its own "
                                         "(remove the link, or copy what it points to)")
            cfg_file = run / "config.json"
            if cfg_file.exists():
                try:
                    self.recorded = json.loads(cfg_file.read_text())
                except (json.JSONDecodeError, UnicodeDecodeError):
                    self.recorded = None
                if not isinstance(self.recorded, dict):
                    raise RunFolderError(f"{cfg_file} is not a JSON object; choose another --exp-name")
            folders = (run, self.checkpoints, self.samples) + ((run / "tensorboard",)
                                                               if cfg.report_to == "tensorboard" else ())
            for folder in folders:
                check_writable(folder)
                remove_temporary(folder)
            # config.json deleted: each checkpoint stores the config it was trained with; check against that.
            if self.recorded is None and checkpoint_files(run):
                self._resume = self.resume_from()
                self.recorded = (self._resume[1] or {}).get("config")
                if not isinstance(self.recorded, dict):
                    raise RunFolderError(f"run folder {run} has no config.json and its checkpoint records no "
                                         "config; use another --exp-name")
            # A folder without checkpoints holds no training to protect (a crash before the first checkpoint, or
            # checkpoints deleted): it restarts from step 0 with the new configuration.
            if self.recorded is not None and checkpoint_files(run):
                new = cfg.to_dict()
                # options and terms added since the run was recorded take their (off) defaults there, and a spec
                # written before the process section is read as its process
                try:
                    recorded = type(cfg).from_dict(self.recorded).to_dict()
                except ValueError as e:
                    raise RunFolderError(f"run folder {run} holds a run this version cannot read ({e}); use another "
                                         "--exp-name or --output-dir") from None
                diffs = config_differences(recorded, new)
                if diffs:
                    raise RunFolderError(f"run folder {run} holds a different run (differs in: "
                                         f"{', '.join(diffs[:6])}); use another --exp-name or --output-dir")
                if not same_data(self.recorded.get("data_dir"), new.get("data_dir")):
                    raise RunFolderError(
                        f"run folder {run} was trained on --data-dir {self.recorded.get('data_dir')}, not "
                        f"{new.get('data_dir')}; if that data moved, edit data_dir in {cfg_file}")
            else:
                self.recorded = None
        except BaseException:
            self.close()
            raise

    def resume_from(self) -> tuple[Path | None, dict | None]:
        """The newest readable checkpoint and its contents; an unreadable newer one is skipped, saying so. When none
        is readable the run is refused rather than restarted: a restart would empty metrics.jsonl."""
        if self._resume is not None:
            found, self._resume = self._resume, None
            return found
        files = checkpoint_files(self.path)
        for i, file in enumerate(reversed(files)):
            try:
                return file, load_checkpoint(file)
            except CheckpointError as e:
                if i == len(files) - 1:
                    raise CheckpointError(f"{e}; no earlier checkpoint is readable (move {self.checkpoints} "
                                          "away to start the run afresh)") from None
                distributed.print0(f"warning: {e}; resuming from the previous checkpoint", file=sys.stderr)
        return None, None

    def begin(self, cfg, start: int) -> None:
        """Rank 0: write config.json (keeping the recorded data_dir), cut metrics.jsonl back to `start`."""
        if distributed.current().is_main:
            record = cfg.to_dict()
            if self.recorded is not None:
                record["data_dir"] = self.recorded.get("data_dir")
            atomic_write(self.path / "config.json",
                         lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n"))
            truncate_log(self.metrics, start)
        distributed.barrier()

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None
