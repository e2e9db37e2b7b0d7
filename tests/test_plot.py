"""`sra plot`: curves of several runs from metrics.jsonl."""
import json

import numpy as np
from PIL import Image

from sra.cli import main
from sra.analysis.curves import read_metrics


def write_run(folder, rows):
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_replayed_steps_keep_the_newest_row(tmp_path):
    run = write_run(tmp_path / "a", [
        {"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}, {"step": 2, "fd_fmnist": 40.0},  # eval row, same step
        {"step": 3, "loss": 9.0},                            # logged, then the session died before its checkpoint
        {"step": 3, "loss": 1.5}, {"step": 4, "loss": 1.0}])  # the resumed session replays step 3
    rows = read_metrics(run)
    assert [(r["step"], r.get("loss"), r.get("fd_fmnist")) for r in rows] == [
        (1, 3.0, None), (2, 2.0, None), (2, None, 40.0), (3, 1.5, None), (4, 1.0, None)]


def test_plot_overlays_runs_with_one_column_per_metric(tmp_path):
    t0 = 1.7e9
    sra = write_run(tmp_path / "sra", [{"step": s, "loss": 1 / s, "denoise": 0.9 / s, "align": 0.2 / s,
                                        "wall_time": t0 + 60 * s} for s in range(1, 6)]
                    + [{"step": 5, "fd_fmnist": 30.0, "wall_time": t0 + 400}])
    plain = write_run(tmp_path / "plain", [{"step": s, "loss": 1.2 / s, "denoise": 1.2 / s, "wall_time": t0 + 50 * s}
                                           for s in range(1, 6)])
    out = tmp_path / "curves.png"
    assert main(["plot", str(plain), str(sra), "--output", str(out), "--labels", "plain,SRA"]) == 0
    img = np.asarray(Image.open(out))
    # loss, denoise, align, fd_fmnist: 4 columns of 4 in, 2 rows (steps, hours) of 3.2 in, at 100 dpi.
    assert img.shape[:2] == (640, 1600)
    # Without timestamps (older runs) there is only the row against steps.
    old = write_run(tmp_path / "old", [{"step": s, "loss": 1 / s} for s in range(1, 4)])
    assert main(["plot", str(old), "--output", str(out)]) == 0
    assert np.asarray(Image.open(out)).shape[:2] == (320, 400)


def test_plot_errors_are_one_line(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    run = write_run(tmp_path / "r", [{"step": 1, "loss": 1.0}])
    assert main(["plot", str(run), "--labels", "a,b", "--output", str(tmp_path / "x.png")]) == 2
    assert "2 labels for 1 runs" in capsys.readouterr().err


def test_a_run_with_one_logged_point_gets_a_marker(tmp_path):
    """One row draws a line of no length: the point needs a marker to be seen (it drew nothing). The bottom row (hours)
    has no legend, so any pixel of the run's colour there is the point itself."""
    run = write_run(tmp_path / "one", [{"step": 10, "loss": 0.5, "wall_time": 1.7e9}])
    out = tmp_path / "curves.png"
    assert main(["plot", str(run), "--output", str(out)]) == 0
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert img.shape[:2] == (640, 400)
    c0 = np.array([0x1f, 0x77, 0xb4])  # matplotlib's first colour
    near = np.abs(img - c0).sum(-1) < 60
    assert near[320:].sum() >= 4  # the marker in the hours row
    assert near[:320].sum() > near[320:].sum()  # the steps row: the marker and the legend's sample


def test_each_run_keeps_its_colour_in_every_panel(tmp_path, monkeypatch):
    """A curve only the second run logs (SRA's align, DiT's vb) is drawn in the second run's colour, not the first's."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_hex

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # plot_runs closes its figure: keep it instead
    plain = write_run(tmp_path / "plain", [{"step": s, "loss": 1 / s, "wall_time": 1.7e9 + s} for s in (1, 2)])
    sra = write_run(tmp_path / "sra", [{"step": s, "loss": 1 / s, "align": 0.5 / s, "wall_time": 1.7e9 + s}
                                       for s in (1, 2)])
    assert main(["plot", str(plain), str(sra), "--output", str(tmp_path / "c.png")]) == 0
    colours = {(ax.get_title() or str(n), line.get_label()): to_hex(line.get_color())
               for n, ax in enumerate(figures[0].axes) for line in ax.get_lines()}
    assert {c for (_, run), c in colours.items() if run == "plain"} == {to_hex("C0")}
    assert {c for (_, run), c in colours.items() if run == "sra"} == {to_hex("C1")}
    assert len(colours) == 6  # loss: 2 runs x 2 rows; align: sra only, 2 rows
