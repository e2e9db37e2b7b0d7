"""Multi-process training on CPU (gloo, torchrun): world-size invariance, single writer, cross-world-size resume,
and failure propagation."""
import subprocess
import sys
import textwrap

import pytest
import torch

from sra.checkpoint import load_checkpoint

COMMON = ["train", "--model", "SiT-T/2", "--data-dir", "digits", "--batch-size", "8", "--log-every", "1",
          "--sample-every", "1000", "--sample-steps", "1", "--no-progress", "--lr", "1e-3"]


def launch(nproc, *args, timeout=400, torchrun=None):
    if not (nproc > 1 if torchrun is None else torchrun):
        cmd = [sys.executable, "-m", "sra", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--standalone",
               "-m", "sra", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def weights(run, step):
    return load_checkpoint(run / "checkpoints" / f"{step:07d}.pt")


def assert_close_states(a, b, atol):
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=lambda m: f"{k}: {m}")


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp"])
def test_two_ranks_equal_one_rank_and_resume_on_another_world_size(tmp_path, fsdp):
    extra = ["--fsdp"] if fsdp else []
    one = launch(1, *COMMON, "--output-dir", str(tmp_path), "--exp-name", "one", "--max-train-steps", "4")
    assert one.returncode == 0, one.stderr[-2000:]
    two = launch(2, *COMMON, *extra, "--output-dir", str(tmp_path), "--exp-name", "two", "--max-train-steps", "2",
                 "--checkpoint-every", "1")
    assert two.returncode == 0, two.stderr[-2000:]
    run = tmp_path / "two"
    # Written once, by rank 0: one file per step and no temporary leftovers.
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["0000001.pt", "0000002.pt"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    # Resume the 2-rank run on 1 rank: DDP as a plain process; FSDP under torchrun, sharded over one process.
    cont = launch(1, *COMMON, *extra, "--output-dir", str(tmp_path), "--exp-name", "two", "--max-train-steps", "4",
                  torchrun=fsdp)
    assert cont.returncode == 0, cont.stderr[-2000:]
    assert "resuming" in cont.stdout
    a, b = weights(tmp_path / "one", 4), weights(run, 4)
    assert_close_states(a["model"], b["model"], atol=1e-5)
    assert_close_states(a["ema"], b["ema"], atol=1e-5)


def test_a_failing_rank_fails_the_job_instead_of_hanging(tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(textwrap.dedent("""
        import torch, torch.distributed as dist
        from sra import distributed
        ctx = distributed.init(timeout_s=20)
        if ctx.rank == 1:
            raise SystemExit("rank 1 fails")
        dist.all_reduce(torch.ones(1))  # rank 0 waits for a peer that is gone
    """))
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                          str(script)], capture_output=True, text=True, timeout=180)
    assert out.returncode != 0
