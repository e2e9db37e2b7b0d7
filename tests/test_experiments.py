"""experiments/: the study's runner lists the exact `sra` commands a run still needs (nothing is started), skips
complete runs and rows whose flags `sra train` does not list, and the report rebuilds docs/RESULTS.md's tables from
the stored results alone and collects new results from run folders. Seconds, no training."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def study(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))  # run.py and report.py are scripts, not a package
    import report
    import run

    table, runs = run.load_table()
    known = {f for r in runs for f in r.flags if f.startswith("--")} - {"--disp-weight"}
    # `sra train --help` as if it listed every flag of the table but the one not yet added
    monkeypatch.setattr(run, "train_flags", lambda: known)
    return run, report


def touch(path: Path, text: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_table_expands_to_the_studys_runs(study):
    run, _ = study
    table, runs = run.load_table()
    names = [r.name for r in runs]
    assert len(names) == len(set(names))
    by = {r.name: r for r in runs}
    assert [r.name for r in runs if r.section == "main"] == ["plain-s0", "sra-s0", "plain-s1", "sra-s1", "plain-s2",
                                                            "sra-s2"]
    assert len([r for r in runs if r.section == "ablation"]) == 10
    # later flags win: the plain run ends with --sra-weight 0, the deep runs with their blocks
    assert by["plain-s0"].flags[-2:] == ["--sra-weight", "0"] and "--sample-every" in by["plain-s0"].flags
    assert by["sra-d12-s1"].flags[-6:] == ["--depth", "12", "--block-out-s", "3", "--block-out-t", "8"]
    assert by["sra-d12-s0"].probe_block == 3 and by["sra-d12-s1"].probe_block == 0
    assert by["plain-dit-s2"].flags.count("--model") == 2 and not by["plain-dit-s2"].planned
    assert not by["disp-d12-s0"].planned and not by["sra-d12-s0"].planned
    # issue 29's rows are data: dispersive, the released cosine, 12 blocks and DiT, 3 seeds each
    for m in ("disp", "sra-cos-tokens", "plain-d12", "sra-d12", "sra-dts-as-d12", "disp-d12", "plain-dit", "sra-dit",
              "sra-dts-as-dit"):
        assert {by[f"{m}-s{s}"].seed for s in (0, 1, 2)} == {0, 1, 2}


def test_dry_run_lists_the_exact_commands_and_skips_unknown_flags(study, tmp_path, capsys):
    run, _ = study
    assert run.main(["--dry-run", "--runs-dir", str(tmp_path), "--only", "family", "--only", "ablation"]) == 0
    out = capsys.readouterr().out.splitlines()
    # one line per row whose flags sra train does not list, and none of its commands
    assert [l for l in out if l.startswith("skip")] == [
        f"skip {m}-s{s}: sra train does not list --disp-weight (the row stays in the table)"
        for s in (0, 1, 2) for m in ("disp", "disp-paper")]
    assert not any("--disp-weight" in l for l in out if not l.startswith("skip"))
    i = out.index("# sra-no-head-s0")
    common = ("--model SiT-T/4 --block-out-s 2 --block-out-t 4 --sra-weight 0.5 --loss-type cos "
              "--ema-half-life-kimg 3.2 --no-ema-warmup --checkpoint-every 300 --sample-every 600 --log-every 50 "
              "--no-progress")
    d = tmp_path / "sra-no-head-s0"
    assert out[i + 1:i + 4] == [
        f"sra train {common} --no-head --max-train-steps 600 --seed 0 --output-dir {tmp_path} "
        "--exp-name sra-no-head-s0",
        f"sra eval --metric fmnist {d}/checkpoints/0000600.pt --num-samples 1000 --sample-steps 30 --seed 1234 "
        f"--no-progress --output {d}/eval_fmnist_step600.json",
        # the last step is also scored by the independent classifier
        f"sra eval --metric fmnist {d}/checkpoints/0000600.pt --num-samples 1000 --sample-steps 30 --seed 1234 "
        f"--classifier resnet --no-progress --output {d}/eval_fmnist-resnet_step600.json"]
    # a family run trains to each evaluated step in turn; seed 0 is probed at both
    i = out.index("# repa-fmnist-s0")
    cmds = out[i + 1:out.index("# dts-as-s0")]
    assert [c.split()[1] for c in cmds] == ["train", "eval", "probe", "train", "eval", "eval", "probe"]
    assert "--max-train-steps 600" in cmds[0] and "--max-train-steps 1200" in cmds[3]
    assert "--classifier" not in cmds[1] + cmds[4] and "--classifier resnet" in cmds[5]
    assert cmds[2].endswith(f"--blocks 2 --times 0.5,0.7,0.9 --max-train 5000 --max-test 2000 --seed 0 "
                            f"--no-progress --output-dir {tmp_path}/repa-fmnist-s0/probe_step600")
    assert all(c.split()[1] != "probe" for c in out[out.index("# repa-fmnist-s1") + 1:out.index("# dts-as-s1")])
    assert not any(l.startswith("python") for l in out)  # only sra commands (the similarity measure is deep's)


def test_complete_runs_are_skipped_and_a_partial_one_resumes(study, tmp_path, capsys, monkeypatch):
    run, _ = study
    done, part = tmp_path / "sra-no-head-s0", tmp_path / "plain-s0"
    touch(done / "checkpoints" / "0000600.pt")
    touch(done / "eval_fmnist_step600.json", "{}")
    touch(done / "eval_fmnist-resnet_step600.json", "{}")
    for step in (300, 600):
        touch(part / "checkpoints" / f"{step:07d}.pt")
        touch(part / f"eval_fmnist_step{step}.json", "{}")
    touch(part / "probe_step600" / "probe.json", "{}")
    assert run.main(["--dry-run", "--runs-dir", str(tmp_path), "--runs", "sra-no-head-s0,plain-s0"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "skip sra-no-head-s0: complete" in out and "# sra-no-head-s0" not in out
    cmds = out[out.index("# plain-s0") + 1:]
    assert [c.split()[1] for c in cmds] == ["train", "eval", "train", "eval", "eval", "probe"]
    assert "--max-train-steps 900" in cmds[0] and "--max-train-steps 1200" in cmds[2]

    # --skip-collected: evaluations and probes already in the results files are not redone (a torn line is not
    # collected), but at the last step, where the independent classifier scores, the default one does too
    results = tmp_path / "results"
    touch(results / "fmnist_study.jsonl", '{"run": "plain-s0", "step": 900}\n{"run": "plain-s0", "step": 1200}\n{"ru')
    touch(results / "fmnist_study_probe.jsonl", '{"run": "plain-s0", "step": 1200}\n')
    assert run.collected(results) == {("eval", "plain-s0", 900), ("eval", "plain-s0", 1200),
                                      ("probe", "plain-s0", 1200)}
    monkeypatch.setattr(run, "RESULTS", results)
    assert run.main(["--dry-run", "--skip-collected", "--runs-dir", str(tmp_path), "--runs", "plain-s0"]) == 0
    cmds = capsys.readouterr().out.splitlines()[1:]
    assert [c.split()[1] for c in cmds] == ["train", "train", "eval", "eval"]
    # the last step: both classifiers score the retrained checkpoint (it is not bit for bit the collected one)
    assert "--classifier" not in cmds[2] and "eval_fmnist_step1200.json" in cmds[2]
    assert "--classifier resnet" in cmds[3]

    # a deep run's similarity file cut short by a kill is measured again; a whole one is not
    d = tmp_path / "plain-d12-s0"
    touch(d / "checkpoints" / "0000600.pt")
    touch(d / "similarity_step600_3-8.jsonl", "{}\n")
    touch(d / "similarity_step600_2-4.jsonl", "{}\n{}\n")
    table, runs = run.load_table()
    deep = next(r for r in runs if r.name == "plain-d12-s0")
    at600 = [str(c) for c in run.commands(deep, table, tmp_path) if "@600" in str(c)]
    assert len(at600) == 1 and "--blocks 3,8" in at600[0] and at600[0].startswith("python benchmarks/")


def test_unknown_section_is_refused(study, tmp_path):
    run, _ = study
    with pytest.raises(SystemExit, match="no section nope"):
        run.main(["--dry-run", "--runs-dir", str(tmp_path), "--only", "nope"])


@pytest.mark.parametrize("text, says", [(None, "cannot read the run table"), ("sections: [", "line 1, column 12"),
                                         ("common: x\n", "KeyError: 'sections'"),
                                         ("sections: {a: {steps: 5}}\ncommon: x\n", "KeyError: 'seeds'")])
def test_a_broken_run_table_is_one_line(study, tmp_path, capsys, text, says):
    run, _ = study
    table = tmp_path / "table.yaml"
    if text is not None:
        table.write_text(text)
    with pytest.raises(SystemExit) as e:
        run.main(["--dry-run", "--table", str(table), "--runs-dir", str(tmp_path)])
    assert says in str(e.value) and str(e.value).startswith("error: ") and "\n" not in str(e.value)


def test_a_missing_sra_command_is_one_line(study, tmp_path, monkeypatch):
    run, _ = study
    monkeypatch.setattr(run.sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(SystemExit, match="no `sra` command beside"):
        run.executable("sra")
    (tmp_path / "sra").write_text("#!/bin/sh\n")
    (tmp_path / "sra").chmod(0o755)
    assert run.executable("sra") == [str(tmp_path / "sra")]


def table_lines(text: str) -> list[str]:
    return [l for l in text.splitlines() if l.startswith("|")]


def test_report_reproduces_the_stored_tables(study, tmp_path):
    """From benchmarks/results alone (no run folders), every table of docs/RESULTS.md comes out as it is."""
    _, report = study
    s = report.Study(report.TABLE, ROOT / "benchmarks" / "results", tmp_path / "docs", tmp_path / "no-runs")
    out = report.render(s)
    assert table_lines(out.read_text()) == table_lines((ROOT / "docs" / "RESULTS.md").read_text())
    assert (tmp_path / "docs" / "fmnist_fd_vs_steps.png").stat().st_size > 0


def test_report_collects_run_folders_once(study, tmp_path):
    """A tiny fake study: run folders with sra eval / sra probe outputs and metrics.jsonl become rows in the results
    files (once: collecting again adds nothing), and the report shows them; planned methods appear once run."""
    run, report = study
    runs_dir, results, docs = tmp_path / "runs", tmp_path / "results", tmp_path / "docs"
    fd = {("plain", 0): 300.0, ("plain", 1): 310.0, ("sra", 0): 305.0, ("sra", 1): 309.0, ("disp", 0): 290.0,
          ("sra-cos-tokens", 0): 301.0}
    for (m, seed), v in fd.items():
        d = runs_dir / f"{m}-s{seed}"
        touch(d / "config.json", json.dumps({"log_every": 50, "batch_size": 64}))
        touch(d / "metrics.jsonl", "".join(json.dumps({"step": s, "denoise": 1.0 / s, "align": 0.02,
                                                       "images_per_s": 64.0}) + "\n" for s in range(50, 1201, 50)))
        for step in (600, 1200):
            touch(run.eval_file(d, step), json.dumps({"fd_fmnist": v + (1200 - step), "class_acc": 0.5,
                                                      "num_samples": 1000, "seed": 1234, "sample_steps": 30}))
    for name, v in (("plain-s0", 250.0), ("disp-s0", 262.0)):  # the independent classifier, at the last step
        touch(run.eval_file(runs_dir / name, 1200, "resnet"),
              json.dumps({"fd_fmnist": v, "class_acc": 0.4, "num_samples": 1000, "seed": 1234, "sample_steps": 30,
                          "classifier": {"name": "resnet", "test_accuracy": 0.9}}))
    # a retrained run scored by the second classifier but not yet by the cnn at that step: left for later
    touch(run.eval_file(runs_dir / "repa-fmnist-s0", 1200, "resnet"), json.dumps({"fd_fmnist": 1.0}))
    touch(run.probe_dir(runs_dir / "disp-s0", 1200) / "probe.json",
          json.dumps({"blocks": [2], "times": [0.5, 0.7, 0.9], "accuracy": [[0.6, 0.5, 0.2]], "num_train": 5000,
                      "num_test": 2000}))
    # the study's table with its 12-block dispersive row marked planned again (every row has run since)
    table = yaml.safe_load(report.TABLE.read_text())
    next(m for m in table["sections"]["deep"]["methods"] if m["name"] == "disp-d12")["planned"] = True
    (tmp_path / "table.yaml").write_text(yaml.safe_dump(table, allow_unicode=True))
    s = report.Study(tmp_path / "table.yaml", results, docs, runs_dir)
    assert report.collect(s) == 15
    before = {p.name: p.read_text() for p in results.iterdir()}
    assert report.collect(s) == 0 and {p.name: p.read_text() for p in results.iterdir()} == before
    pairs = {r["run"]: (r["cnn_fd_fmnist"], r["fd_fmnist"]) for r in report.read_jsonl(
        results / "fmnist_study_independent.jsonl")}
    assert pairs == {"plain-s0": (300.0, 250.0), "disp-s0": (290.0, 262.0)}  # each with the same checkpoint's cnn
    rows = report.latest_rows(results / "fmnist_study.jsonl")
    assert rows[("sra-s1", 1200)]["group"] == "main" and rows[("sra-s1", 1200)]["train_seconds"] == pytest.approx(1200)
    assert rows[("disp-s0", 600)]["group"] == "family"

    text = report.render(s).read_text()
    assert "| 1200 | 305.0 ± 5.0 (n=2) | 307.0 ± 2.0 (n=2) | +2.0 | 50.0 ± 0.0 (n=2) | 50.0 ± 0.0 (n=2) |" in text
    disp = next(l for l in table_lines(text) if l.startswith("| Dispersive loss"))
    assert "| 290.0 (n=1) | -10.0 (n=1) |" in disp and disp.endswith("| 1.00 | 60.0 / 50.0 / 20.0 |")
    # the independent classifier's table pairs the same runs: cnn 290 - 300, resnet 262 - 250
    indep = next(l for l in table_lines(text[text.index("## An independent metric"):]) if l.startswith("| Dispersive"))
    assert "| 290.0 (n=1) | 262.0 (n=1) | -10.0 (n=1) | +12.0 (n=1) | 50.0 (n=1) | 40.0 (n=1) | +0.0 (n=1) |" in indep
    assert "Scored by the resnet classifier: Δ FD +12.0 (one seed: no verdict)" in text
    # a row's `versus` method is compared seed by seed too (cos-over-tokens against SRA: 301 - 305)
    assert "Against SRA (main setting) of the same seed: Δ FD -4.0, Δ accuracy +0.0 points." in text
    assert "(fmnist_study_summary.png)" in text and (docs / "fmnist_study_summary.png").stat().st_size > 0
    # a planned method stays out of the tables until one of its runs has a result
    assert "12 blocks, no SRA" not in "\n".join(table_lines(text))
    assert "## Planned, not run yet" in text and "`disp-d12`" in text


def test_step_cost_reads_the_bench_of_the_runs_model_and_depth(study, tmp_path):
    """A method's cost is the paired ratio of the bench record whose --model and --depth are the run's: the 12-block
    rows never borrow the 6-block figures, and a depth no bench ran has no cost."""
    _, report = study
    import study as study_mod

    def record(command, sra, dts):
        return json.dumps({"command": command, "sra_over_plain_paired": sra,
                           "methods": {"sra_dts_as": {"over_plain_paired": dts}}}) + "\n"

    results = tmp_path / "results"
    touch(results / "fmnist_study_cost.jsonl",
          record("OMP_NUM_THREADS=1 sra bench --model SiT-T/4 --block-out-s 2 --steps 5", 1.24, 1.68))
    s = report.Study(report.TABLE, results, tmp_path / "docs", tmp_path / "runs")
    assert study_mod.step_cost(s, "main", "sra") == 1.24 and study_mod.step_cost(s, "main", "plain") == 1.0
    assert study_mod.step_cost(s, "deep", "sra-d12") is None and study_mod.step_cost(s, "dit", "sra-dit") is None
    with open(results / "fmnist_study_cost.jsonl", "a") as f:
        f.write(record("sra bench --model SiT-T/4 --depth 12 --block-out-s 3 --block-out-t 8", 1.14, 1.66))
    assert study_mod.step_cost(s, "deep", "sra-d12") == 1.14
    assert study_mod.step_cost(s, "deep", "sra-dts-as-d12") == 1.66
    assert study_mod.step_cost(s, "main", "sra") == 1.24 and study_mod.step_cost(s, "family", "sra-dts-as") == 1.68
