"""Output folders: one writer at a time, atomic files, a log that agrees with the checkpoint it resumes from. The only
place that knows how sra's folders are locked and written (checkpoints, train, generate, sample and prepare use it);
it imports nothing of sra but `distributed`, so everything can build on it.

What a crash may lose and what is refused is listed in docs/RELIABILITY.md; this module (with sra.train.folder, the
training run folder's checks) is where those promises are kept:
- `FolderLock`: an advisory fcntl.flock on FOLDER/.lock, taken by rank 0 only and released by the OS when the process
  dies, so a second `sra train` (or `sra generate`) on the same folder is refused with the holder's PID;
- `atomic_write`: temporary file in the same folder, fsync, rename; the temporary file is removed on any failure, and
  a full disk becomes one line instead of a traceback; the file gets open()'s mode (0666 less the umask), as with
  `staged`, even from a writer that makes it private (safetensors: 0600);
- `inside` and `staged`: a writer of a folder's files (an export) never writes through a symbolic link out of it;
- `truncate_log`: metrics.jsonl cut back to the step a run resumes from;
- `StopSignals`: SIGTERM/SIGINT/SIGHUP become a request the loop honours at the next step boundary;
- `check_output`: no command writes into a training run folder's records unless it owns the run;
- `writing`: any OS error while writing an output becomes one line naming the path;
- `fault`: the fault-injection hook the tests use (SRA_FAULT), a no-op otherwise.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import stat
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable

from . import distributed

LOCK = ".lock"
# What `sra train` keeps in a run folder: no other command writes these (`check_output`).
RUN_RECORDS = (LOCK, "config.json", "metrics.jsonl", "checkpoints", "samples")


class RunFolderError(ValueError):
    """The run folder holds another run, is in use, or cannot be written; the CLI prints it as one line."""


class Stopped(Exception):
    """The run stopped early on purpose (a signal, divergence). The CLI prints the message and exits with `code`."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


# ----------------------------------------------------------------------------------------------------------------
# Fault injection (tests): SRA_FAULT="ACTION:POINT[:N]" acts the N-th time (default 1) POINT is reached
# ----------------------------------------------------------------------------------------------------------------

_reached: dict[str, int] = {}


SIGNALS = {"kill": signal.SIGKILL, "stop": signal.SIGSTOP, "term": signal.SIGTERM, "int": signal.SIGINT,
           "hup": signal.SIGHUP}
ERRORS = {"enospc": errno.ENOSPC, "erofs": errno.EROFS}


def fault(point: str, path: Path | None = None) -> None:
    """ACTION kill/stop/term/int/hup: send SIGKILL/SIGSTOP/SIGTERM/SIGINT/SIGHUP to this process; enospc/erofs: raise
    ENOSPC/EROFS. For kill and enospc with `path` (a file being written) the file is first cut to half its size, as a
    write interrupted midway would leave it. Points: step (after an optimizer step), checkpoint-write, image-write,
    chunk-commit, write (any atomic write, before its rename)."""
    spec = os.environ.get("SRA_FAULT")
    if not spec:
        return
    action, where, *n = spec.split(":")
    if where != point:
        return
    _reached[point] = _reached.get(point, 0) + 1
    if _reached[point] != int(n[0] if n else 1):
        return
    if action in ("kill", "enospc") and path is not None and path.exists():
        os.truncate(path, path.stat().st_size // 2)
    if action in ERRORS:
        raise OSError(ERRORS[action], os.strerror(ERRORS[action]), str(path or point))
    os.kill(os.getpid(), SIGNALS[action])


# ----------------------------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------------------------

def say(line: str) -> None:
    """One line to stderr in one write: the ranks of a torchrun job share one pipe, and with PYTHONUNBUFFERED set
    print() writes its text and its newline separately, so two ranks' lines could run into one."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def error_line(e: BaseException) -> str:
    """'Type: first line of its message' (the type's name alone twice when the message is empty): an exception as the
    one-line warnings of optional work quote it."""
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [type(e).__name__])[0]}"


def write_failure(path: Path, e: BaseException) -> RunFolderError:
    """One line for a failed write; torch wraps the OS error of its zip writer in a RuntimeError without errno."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return RunFolderError(f"cannot write {path}: no space left on device (nothing was replaced)")
    reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e).strip().splitlines()[0]
    return RunFolderError(f"cannot write {path}: {reason} (is the disk full?)" if isinstance(e, RuntimeError)
                          else f"cannot write {path}: {reason}")


def new_file_mode() -> int:
    """The mode open() gives a new file, 0o666 less the umask. Writers that make files private (safetensors,
    mkstemp: 0600) would otherwise leave exports and run files unreadable to a group that shares them."""
    umask = os.umask(0o022)  # the umask can only be read by setting it
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], point: str | None = None,
                 sync: bool = True) -> None:
    """write(tmp) to PATH.tmp in the same folder, give it open()'s mode for a new file, fsync (unless `sync` is
    false: files cheap to redo), rename onto PATH. On any failure the temporary file is removed and PATH is untouched;
    OS and torch write errors become one RunFolderError line. `point` names the fault-injection point between the
    write and the rename."""
    path = Path(path)
    if path.is_dir():
        raise RunFolderError(f"cannot write {path}: it is a folder")
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.unlink(missing_ok=True)  # a killed writer's leftover, or a link planted there: never written through
        write(tmp)
        os.chmod(tmp, new_file_mode())
        fault("write", tmp)
        if point:
            fault(point, tmp)
        if sync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())  # the rename must not reach the disk before the data (power loss)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, (OSError, RuntimeError)) and not isinstance(e, RunFolderError):
            raise write_failure(path, e) from None
        raise


def inside(folder: str | os.PathLike, name: str | os.PathLike = "") -> Path:
    """FOLDER/NAME for a writer that must stay inside FOLDER: refused in one line when NAME is absolute or climbs out
    (`..`), or when FOLDER itself or an existing part of NAME is a symbolic link (writing through it would replace
    a file elsewhere: an export's README.md linked to another file overwrote that file). FOLDER's parents are the
    caller's choice and may be links. Returns the path."""
    folder, rel = Path(folder), Path(name)
    if rel.is_absolute() or ".." in rel.parts:
        raise RunFolderError(f"{rel} is not a path inside {folder}")
    path = folder
    for part in ("", *rel.parts):
        path = path / part
        if path.is_symlink():
            raise RunFolderError(f"{path} is a symbolic link; sra writes only inside {folder}, so nothing was "
                                 "written: remove the link or choose another output folder")
    return folder / rel


@contextlib.contextmanager
def staged(folder: str | os.PathLike):
    """A fresh private folder inside FOLDER (created if needed) to write an output's files into, then moved into
    FOLDER at the same relative paths: every destination is checked with `inside` before any file moves (a refusal
    writes nothing), then each file is given open()'s mode for a new file, fsynced and renamed into place. The stage
    is removed either way; a process killed meanwhile leaves FOLDER/.staging-* behind, never a half-written file
    under its final name."""
    folder = inside(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
    try:
        yield stage
        files = sorted(p.relative_to(stage) for p in stage.rglob("*") if p.is_file())
        targets = [inside(folder, f) for f in files]
        mode = new_file_mode()
        for f, target in zip(files, targets):
            os.chmod(stage / f, mode)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(stage / f, "rb") as handle:
                os.fsync(handle.fileno())  # the rename must not reach the disk before the data (power loss)
            os.replace(stage / f, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def writing(path: str | os.PathLike):
    """Around the writes of an output: an OS error (read-only or full file system, a file in the way) about a file in
    `path` (or about no file: a failed write() names none) becomes one RunFolderError line naming it. An error about
    another file (an input) passes unchanged."""
    try:
        yield
    except RunFolderError:
        raise
    except OSError as e:
        where = Path(os.fsdecode(e.filename)) if e.filename else Path(path)
        a, b = os.path.abspath(where), os.path.abspath(path)
        if not (a.startswith(b) and a[len(b):len(b) + 1] in ("", os.sep, ".")):  # PATH, PATH/..., PATH.tmp
            raise
        raise write_failure(where, e) from None
    except Exception as e:  # libraries that wrap the OS error: safetensors' "I/O error: ... (os error 28)"
        found = re.search(r"\(os error (\d+)\)", str(e))
        if not found:
            raise
        code = int(found.group(1))
        raise write_failure(Path(path), OSError(code, os.strerror(code))) from None


def training_run(folder: Path) -> bool:
    """`folder` holds a training run: config.json beside checkpoints/, metrics.jsonl or a lock."""
    return (folder / "config.json").is_file() and any(
        (folder / name).exists() for name in ("checkpoints", "metrics.jsonl", LOCK))


def check_output(path: str | os.PathLike, what: str = "output") -> Path:
    """Refuse an output path that is a training run folder or lies among its records (RUN_RECORDS): only the `sra
    train` that owns the run writes there (an export into RUN replaced its config.json, a grid written over
    RUN/checkpoints/N.pt replaced a checkpoint). Paths are compared after resolving symbolic links. Returns `path`."""
    path = Path(path)
    real = Path(os.path.realpath(path))
    for folder in (real, *real.parents):
        if training_run(folder):
            rel = real.relative_to(folder).parts
            if not rel:
                raise RunFolderError(f"{what} {path} is a training run folder; only `sra train` writes there; "
                                     "choose another path")
            if rel[0] in RUN_RECORDS:
                raise RunFolderError(f"{what} {path} lies in {rel[0]} of training run {folder}; only `sra train` "
                                     "writes there; choose another path")
    return path


def remove_temporary(folder: Path, patterns=("*.tmp", "*.tmp.png", ".*.tmp.png")) -> None:
    """Temporary files a killed process left behind (only called while holding the folder's lock)."""
    if folder.is_dir():
        for pattern in patterns:
            for p in folder.glob(pattern):
                p.unlink(missing_ok=True)


def check_writable(folder: Path) -> None:
    """Create `folder` if needed and prove it writable by creating a file in it (os.access is wrong for root and
    for read-only mounts)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except FileExistsError:
        raise RunFolderError(f"{folder} is a file, not a folder; move it away") from None
    except OSError as e:
        raise RunFolderError(f"cannot write to {folder}: {e.strerror or e}") from None


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSONL file; a line cut by a kill (or not an object) is dropped."""
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def truncate_log(path: Path, step: int) -> None:
    """Keep the rows of steps <= `step` (the step a run resumes from), so that every step is logged exactly once."""
    if not path.exists():
        return
    keep = [r for r in read_jsonl(path) if isinstance(r.get("step"), int) and r["step"] <= step]
    atomic_write(path, lambda tmp: tmp.write_text("".join(json.dumps(r) + "\n" for r in keep)))


# ----------------------------------------------------------------------------------------------------------------
# Lock
# ----------------------------------------------------------------------------------------------------------------

class FolderLock:
    """Exclusive advisory lock on FOLDER/.lock holding the owner's PID. The OS drops it when the process dies (also on
    SIGKILL), so a stale lock never blocks a rerun. Advisory: it only excludes other sra processes."""

    def __init__(self, folder: str | os.PathLike, what: str = "run folder"):
        self.folder, self.what, self.fd = Path(folder), what, None

    def acquire(self) -> "FolderLock":
        path = self.folder / LOCK
        try:  # never through a symbolic link: truncating the lock file would truncate its target
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise RunFolderError(f"{path} is a symbolic link, not a lock file; remove it") from None
            raise write_failure(path, e) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise RunFolderError(f"{path} is not a regular file; remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunFolderError(f"{self.what} {self.folder} is in use by process {holder}; wait for it to finish "
                                 "or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def on_rank0(fn: Callable[[], object]):
    """fn() on rank 0; if it raises, every rank raises (nobody waits at a barrier for a rank that gave up)."""
    result, error = None, None
    if distributed.current().is_main:
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 -- re-raised below, on every rank
            error = e
    if distributed.any_rank(error is not None):
        raise error if error is not None else RunFolderError("rank 0 could not set up the folder (see its message)")
    return result


# ----------------------------------------------------------------------------------------------------------------
# Signals
# ----------------------------------------------------------------------------------------------------------------

class StopSignals:
    """SIGTERM (what schedulers send), SIGINT and SIGHUP (a closed terminal, a cluster's hang-up) set `received`; the
    loop saves a checkpoint at the next step boundary and stops. A second signal stops at once (KeyboardInterrupt).
    Installed only in the main thread.

    `preempt` (--preempt-signal: USR1 or USR2) is the signal a cluster sends ahead of stopping a job (SLURM's
    `--signal=USR1@120`, 120 s before the time limit); it stops the run the same way, and `exit_code` is then
    PREEMPTED, which requeue scripts test."""

    PREEMPT_SIGNALS = ("none", "USR1", "USR2")
    # sysexits.h EX_TEMPFAIL: "a temporary failure ... the user is invited to retry the operation later", the status
    # on which mail servers requeue. Not 128 + the signal: a process the signal killed before its handler was
    # installed ends with that too (138 for SIGUSR1), and it saved nothing; under 126, clear of the shell's codes.
    PREEMPTED = 75

    def __init__(self, preempt: str = "none"):
        if preempt not in self.PREEMPT_SIGNALS:
            raise ValueError(f"preempt signal {preempt!r} is not one of {', '.join(self.PREEMPT_SIGNALS)}")
        self.preempt = None if preempt == "none" else f"SIG{preempt}"
        self.received: str | None = None
        self._old = {}

    def _handler(self, signum, frame):
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signal.Signals(signum).name

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            extra = (getattr(signal, self.preempt),) if self.preempt else ()
            for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, *extra):
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}

    @property
    def preempted(self) -> bool:
        return self.received is not None and self.received == self.preempt

    @property
    def exit_code(self) -> int:
        if self.preempted:
            return self.PREEMPTED
        return 128 + int(getattr(signal, self.received))  # the shell's: 143 SIGTERM, 130 SIGINT, 129 SIGHUP
