"""Experiment tracking: TensorBoard event files read back with tensorboard's own reader; W&B offline; wall-clock
timestamps in metrics.jsonl."""
import json

import pytest

from sra.cli import main

FAST = ["train", "--model", "SiT-T/2", "--data-dir", "digits", "--batch-size", "16", "--log-every", "1",
        "--sample-every", "3", "--sample-steps", "1", "--no-progress", "--checkpoint-every", "4"]


def test_tensorboard_continues_a_resumed_run_without_duplicated_steps(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = ["--output-dir", str(tmp_path), "--exp-name", "tb", "--report-to", "tensorboard"]
    assert main([*FAST, *out, "--max-train-steps", "6"]) == 0
    run = tmp_path / "tb"
    # An interrupted session: steps 5 and 6 were logged but their checkpoint never written.
    (run / "checkpoints" / "0000006.pt").unlink()
    assert main([*FAST, *out, "--max-train-steps", "8"]) == 0  # resumes from step 4
    ea = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    loss = ea.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, 9))  # every logged step once, the replayed ones from session 2
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    last = {r["step"]: r for r in rows}  # the newest row of each step is the one of the session that continued
    for e in loss:
        assert e.value == pytest.approx(last[e.step]["loss"], rel=1e-6)
    assert {"train/denoise", "train/align", "train/grad_norm", "train/images_per_s"} <= set(ea.Tags()["scalars"])
    # Sample grids as images: steps 3 and 6 of session 1 are purged with it where replayed (6), then 6 and 8.
    assert [e.step for e in ea.Images("samples")] == [3, 6, 8]
    # Wall-clock timestamps, increasing within the file.
    times = [r["wall_time"] for r in rows]
    assert all(b >= a for a, b in zip(times, times[1:])) and times[0] > 1.6e9


def test_wandb_offline_keeps_one_run_id_across_a_resume(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline is the default: no network needed
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = ["--output-dir", str(tmp_path), "--exp-name", "wb", "--report-to", "wandb"]
    assert main([*FAST, *out, "--max-train-steps", "2"]) == 0
    run = tmp_path / "wb"
    run_id = (run / "wandb_id").read_text().strip()
    assert main([*FAST, *out, "--max-train-steps", "3"]) == 0
    assert (run / "wandb_id").read_text().strip() == run_id
    offline = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
    assert len(offline) == 2 and all(name.endswith(run_id) for name in offline)


def test_wandb_online_without_a_server_logs_offline(tmp_path, monkeypatch, capfd):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_API_KEY", "a" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the discard port
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "3")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = ["--output-dir", str(tmp_path), "--exp-name", "wb", "--report-to", "wandb"]
    assert main([*FAST, *out, "--max-train-steps", "2"]) == 0
    run = tmp_path / "wb"
    warnings = [l for l in capfd.readouterr().err.splitlines() if l.startswith("warning:")]
    assert len(warnings) == 1 and "logging offline" in warnings[0]
    run_id = (run / "wandb_id").read_text().strip()
    offline = list((run / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(offline) == 1 and any(offline[0].glob("*.wandb"))  # the steps were logged there, to sync later
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def test_report_to_a_missing_package_is_one_line(tmp_path, capsys, monkeypatch):
    import sra.train.tracking as tracking

    monkeypatch.setattr(tracking, "installed", lambda name: False)
    assert main([*FAST, "--output-dir", str(tmp_path), "--report-to", "tensorboard", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install tensorboard" in err[0]
    assert tracking.default_reporter() == "none"
