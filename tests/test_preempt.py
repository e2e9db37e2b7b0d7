"""Cluster preemption (issue 41): `--preempt-signal USR1` finishes the step, saves a checkpoint, exits with
StopSignals.PREEMPTED (75) and one line; the same command then ends bit-identical to an uninterrupted run. Under
torchrun every rank stops at the same step, also when only one of them got the signal.

The signal comes from outside, as a cluster's does, at a chosen step: the run stops itself there with SIGSTOP
(SRA_FAULT=stop:step:N), the test sends SIGUSR1 while it is stopped and then SIGCONT, so the handler runs right after
step N."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sra import runfolder
from sra.checkpoint import load_checkpoint
from sra.cli import main
from sra.runfolder import StopSignals

STEPS = 12
TINY = ["--model", "SiT-T/4", "--depth", "2", "--block-out-s", "1", "--block-out-t", "2", "--data-dir", "digits",
        "--batch-size", "16", "--max-train-steps", str(STEPS), "--sample-every", "1000", "--sample-steps", "2",
        "--no-progress", "--report-to", "none", "--preempt-signal", "USR1"]


def train_argv(out, name, *extra):
    return ["train", *TINY, "--output-dir", str(out), "--exp-name", name, *extra]


@pytest.fixture(autouse=True)
def _no_fault(monkeypatch):
    monkeypatch.delenv("SRA_FAULT", raising=False)
    runfolder._reached.clear()


def state(pid: int) -> str:
    """The process state letter from /proc (T: stopped)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2]


def wait_until(condition, timeout=300.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def assert_same_final_checkpoint(run, ref, steps=STEPS):
    a = load_checkpoint(ref / "checkpoints" / f"{steps:07d}.pt")
    b = load_checkpoint(run / "checkpoints" / f"{steps:07d}.pt")
    assert a["step"] == b["step"] == steps
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)
    assert [r["step"] for r in runfolder.read_jsonl(run / "metrics.jsonl")] == \
        [r["step"] for r in runfolder.read_jsonl(ref / "metrics.jsonl")]


def test_stop_signals_know_the_preemption_signal():
    """The preemption signal is handled only when asked for, gives status 75 (SIGTERM still 143), and the previous
    handlers come back afterwards."""
    before = signal.getsignal(signal.SIGUSR2)
    with StopSignals("USR2") as s:
        assert signal.getsignal(signal.SIGUSR2) != before
        os.kill(os.getpid(), signal.SIGUSR2)
        assert s.received == "SIGUSR2" and s.preempted and s.exit_code == StopSignals.PREEMPTED == 75
    assert signal.getsignal(signal.SIGUSR2) == before
    with StopSignals() as s:
        assert signal.getsignal(signal.SIGUSR2) == before  # "none": not ours to catch
        os.kill(os.getpid(), signal.SIGTERM)
        assert not s.preempted and s.exit_code == 143
    with pytest.raises(ValueError, match="USR1"):
        StopSignals("KILL")


def test_preempted_run_exits_75_with_one_line_and_the_same_command_finishes_it(tmp_path):
    argv = train_argv(tmp_path, "p", "--log-every", "1", "--checkpoint-every", "5")
    env = {**os.environ, "SRA_FAULT": "stop:step:3", "PYTHONUNBUFFERED": "1"}
    p = subprocess.Popen([sys.executable, "-m", "sra", *argv], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: p.poll() is not None or state(p.pid) == "T", what="the run to stop after step 3")
        assert p.poll() is None, p.communicate()
        os.kill(p.pid, signal.SIGUSR1)  # pending while stopped; handled as soon as it runs again
        os.kill(p.pid, signal.SIGCONT)
        out, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
    run = tmp_path / "p"
    assert p.returncode == StopSignals.PREEMPTED == 75, err
    assert err.strip().splitlines() == [
        f"sra train: preempted by SIGUSR1 after step 3; checkpoint {run / 'checkpoints' / '0000003.pt'} saved; "
        "exit status 75: run the same command to continue (a requeued job does)"]
    assert load_checkpoint(run / "checkpoints" / "0000003.pt")["step"] == 3  # between the checkpoints of steps 0, 5
    assert [r["step"] for r in runfolder.read_jsonl(run / "metrics.jsonl")] == [1, 2, 3]
    assert main(argv) == 0  # the same command (here in-process), as a requeued job runs it
    assert main(train_argv(tmp_path, "ref", "--log-every", "1", "--checkpoint-every", "5")) == 0
    assert_same_final_checkpoint(run, tmp_path / "ref")


def torchrun(*argv, env=None):
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                             "-m", "sra", *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def workers(pid: int) -> dict[int, int]:
    """RANK -> pid of torchrun's worker processes (its direct children)."""
    found = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:  # a thread that has ended
            continue
        for child in children:
            try:
                text = Path(f"/proc/{child}/environ").read_text()
            except OSError:  # a process that has ended
                continue
            environ = dict(kv.split("=", 1) for kv in text.split("\0") if "=" in kv)
            if "RANK" in environ:
                found[int(environ["RANK"])] = int(child)
    return found


def test_under_torchrun_every_rank_stops_at_the_same_step_when_one_is_preempted(tmp_path):
    """Only rank 1 gets SIGUSR1 (after step 3, with --log-every 50): both ranks agree at step 10 (PREEMPT_AGREE_EVERY,
    not the next log step), rank 0 writes the checkpoint of step 10, both exit 75. torchrun itself exits 1 (it
    reports its workers' statuses but exits 1 when any is non-zero), which is why examples/slurm/ requeue on the
    signal they trapped rather than on torchrun's status. The same command then ends where an uninterrupted 2-rank
    run ends, bit for bit."""
    args = [*train_argv(tmp_path, "t", "--log-every", "50", "--checkpoint-every", "50", "--batch-size", "8")]
    env = {**os.environ, "SRA_FAULT": "stop:step:3", "PYTHONUNBUFFERED": "1"}
    p = torchrun(*args, env=env)
    try:
        ranks = {}

        def both_stopped():
            if p.poll() is not None:
                return True
            ranks.update(workers(p.pid))
            return len(ranks) == 2 and all(state(pid) == "T" for pid in ranks.values())

        wait_until(both_stopped, what="both ranks to stop after step 3")
        assert p.poll() is None, p.communicate()
        os.kill(ranks[1], signal.SIGUSR1)
        for pid in ranks.values():
            os.kill(pid, signal.SIGCONT)
        out, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None:
            p.kill()
    run = tmp_path / "t"
    assert p.returncode == 1, err[-3000:]
    # Each rank prints its line and exits 75; once the first has exited torchrun sends SIGTERM to the rest, which may
    # end a rank that is already past its handlers, so only the first is certain.
    assert "sra train: preempted by SIGUSR1 after step 10; checkpoint" in err, err[-3000:]
    assert "exitcode  : 75" in err, err[-3000:]  # torchrun's summary of its workers
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["0000010.pt"]
    done = torchrun(*args)
    out, err = done.communicate(timeout=300)
    assert done.returncode == 0, err[-3000:]
    ref = torchrun(*train_argv(tmp_path, "ref", "--log-every", "50", "--checkpoint-every", "50", "--batch-size", "8"))
    out, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err[-3000:]
    assert_same_final_checkpoint(run, tmp_path / "ref")
