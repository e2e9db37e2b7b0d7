"""Checkpoint housekeeping: --keep-last K and --keep-every M."""
from sra.cli import main
from sra.checkpoint import load_checkpoint
from sra.checkpoint import prune_checkpoints

FAST = ["train", "--model", "SiT-T/2", "--data-dir", "digits", "--batch-size", "16", "--log-every", "1",
        "--sample-every", "1000", "--sample-steps", "1", "--no-progress", "--checkpoint-every", "1"]


def names(run):
    return sorted(p.name for p in (run / "checkpoints").iterdir())


def test_prune_keeps_the_newest_milestones_and_protected(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for step in range(1, 11):
        (folder / f"{step:07d}.pt").write_bytes(b"x")
    (folder / "0000011.pt.tmp").write_bytes(b"partial")  # an unfinished write is not a checkpoint: left alone
    deleted = prune_checkpoints(tmp_path, keep_last=2, keep_every=4, protect=(folder / "0000003.pt",))
    # Expected by hand: newest two (9, 10), multiples of 4 (4, 8), the protected 3.
    assert names(tmp_path) == ["0000003.pt", "0000004.pt", "0000008.pt", "0000009.pt", "0000010.pt", "0000011.pt.tmp"]
    assert sorted(p.name for p in deleted) == ["0000001.pt", "0000002.pt", "0000005.pt", "0000006.pt", "0000007.pt"]
    assert prune_checkpoints(tmp_path, keep_last=0) == []  # 0: keep everything


def test_keep_last_in_training_and_across_a_resume(tmp_path):
    out = ["--output-dir", str(tmp_path), "--exp-name", "k"]
    assert main([*FAST, *out, "--max-train-steps", "6", "--keep-last", "2", "--keep-every", "4"]) == 0
    run = tmp_path / "k"
    assert names(run) == ["0000004.pt", "0000005.pt", "0000006.pt"]  # 2 newest + the milestone
    # Resume with --keep-last 1 (housekeeping may change on resume): K means K; the checkpoint resumed from (6) goes
    # once a newer one (7) is complete on disk.
    assert main([*FAST, *out, "--max-train-steps", "9", "--keep-last", "1", "--keep-every", "4"]) == 0
    assert names(run) == ["0000004.pt", "0000008.pt", "0000009.pt"]
    assert load_checkpoint(run / "checkpoints" / "0000009.pt")["step"] == 9
