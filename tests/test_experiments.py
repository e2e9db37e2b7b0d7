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


# ----------------------------------------------------------------------------------------------------------------
# The runner as a hostile user meets it (issue 40): tiny tables in tmp_path
# ----------------------------------------------------------------------------------------------------------------

def tiny_table(tmp_path: Path, name: str = "m", section: str = "s", steps="2", seeds="[0]", eval_steps="[2]",
               extra: str = "") -> Path:
    """A one-section, one-method table (`name` is written as JSON, which YAML reads: escapes and all)."""
    path = tmp_path / "table.yaml"
    path.write_text(f"common: --log-every 1 --no-progress\neval: {{samples: 2, sample_steps: 1, seed: 0}}\n"
                    f"sections:\n  {section}:\n    steps: {steps}\n    seeds: {seeds}\n    eval_steps: {eval_steps}\n"
                    f"{extra}    methods:\n      - {{name: {json.dumps(name)}, label: x}}\n")
    return path


def refusal(run, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        run.main(argv)
    message = str(e.value)
    assert message.startswith("error: ") and "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.parametrize("name", ["../escaped", "/tmp/absolute", "", "..", "a\nb", "bell\x07", "-looks-like-a-flag"])
def test_run_names_are_plain_folder_names_and_writes_stay_in_runs_dir(study, tmp_path, name):
    """A method name that is not one plain folder name is refused before anything (its run folder and log would
    land outside --runs-dir); and a run folder or log folder inside --runs-dir that is a symbolic link (the writes
    would go to its target) is refused by runfolder.inside, in one line, nothing written there."""
    run, _ = study
    runs_dir = tmp_path / "runs"
    says = refusal(run, ["--table", str(tiny_table(tmp_path, name)), "--runs-dir", str(runs_dir)])
    assert "sections.s.methods[0].name" in says and "is not a plain folder name" in says
    assert not runs_dir.exists() and not (tmp_path / "escaped").exists()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    table = tiny_table(tmp_path)
    for link in ("m-s0", "logs"):
        runs_dir.mkdir(exist_ok=True)
        (runs_dir / link).symlink_to(elsewhere, target_is_directory=True)
        for dry in ([], ["--dry-run"]):
            says = refusal(run, ["--table", str(table), "--runs-dir", str(runs_dir), *dry])
            assert f"{runs_dir / link} is a symbolic link" in says
        (runs_dir / link).unlink()
    assert list(elsewhere.iterdir()) == []
    # the section's name names its curves file, a classifier's its evaluation file
    says = refusal(run, ["--dry-run", "--table", str(tiny_table(tmp_path, section="'../up'")), "--runs-dir",
                         str(runs_dir)])
    assert "sections: the section name '../up' is not a plain folder name" in says
    table.write_text(tiny_table(tmp_path).read_text().replace("seed: 0}", "seed: 0, independent: [../x]}"))
    says = refusal(run, ["--dry-run", "--table", str(table), "--runs-dir", str(runs_dir)])
    assert "eval.independent[0] '../x' is not a plain folder name" in says


@pytest.mark.parametrize("dry", [[], ["--dry-run"]])
def test_a_runs_dir_that_is_a_file_is_one_line(study, tmp_path, dry):
    run, _ = study
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    for runs_dir in (afile, afile / "below"):
        says = refusal(run, ["--table", str(tiny_table(tmp_path)), "--runs-dir", str(runs_dir), *dry])
        assert f"{afile} is a file, not a folder" in says
    assert afile.read_text() == "mine\n"


@pytest.mark.parametrize("extra, argv, says", [
    ({"seeds": "['0']"}, [], "sections.s.seeds[0] must be an integer, not '0'"),
    ({"seeds": "[-1]"}, [], "sections.s.seeds[0] must be in 0..9223372036854775807, not -1"),
    ({"seeds": "[0, 0]"}, [], "sections.s.seeds lists 0 twice"),
    ({"seeds": "[true]"}, [], "sections.s.seeds[0] must be an integer, not True"),
    ({"steps": "0", "eval_steps": "[1]"}, [], "sections.s.steps must be in 1..9223372036854775807, not 0"),
    ({"steps": "'2'"}, [], "sections.s.steps must be an integer, not '2'"),
    ({"eval_steps": "[-1]"}, [], "sections.s.eval_steps[0] must be in 1..2, not -1"),
    ({"eval_steps": "[3]"}, [], "sections.s.eval_steps[0] must be in 1..2, not 3"),
    ({"extra": "    steps: 3\n"}, [], "'steps' is given twice (line 8)"),
    ({"extra": "    eval_step: [1]\n"}, [], "sections.s.eval_step is not a key of sections.s"),
    ({}, ["--jobs", "-3"], "--jobs must be >= 1 (got -3)"),
    ({}, ["--threads", "0"], "--threads must be >= 1 (got 0)"),
])
def test_table_types_ranges_and_options_are_refused_before_any_run(study, tmp_path, monkeypatch, extra, argv, says):
    """Each wrong entry is one line naming the table entry and key (or the option), exit status != 0, before any
    run starts or any folder is made."""
    run, _ = study
    monkeypatch.setattr(run, "execute_all", lambda *a: pytest.fail("a run started"))
    table = tiny_table(tmp_path, **extra)
    message = refusal(run, ["--table", str(table), "--runs-dir", str(tmp_path / "runs"), *argv])
    assert says in message, message
    assert not (tmp_path / "runs").exists()


FAKE_SRA = """
import signal, sys, time
from pathlib import Path
args = sys.argv[1:]
opt = lambda name: args[args.index(name) + 1]
if args[0] == "train":
    folder = Path(opt("--output-dir")) / opt("--exp-name")
    def stop(signum, frame):  # as sra train does: finish the step, save its checkpoint (it takes a while), exit 130
        time.sleep(1)
        (folder / "checkpoints").mkdir(parents=True, exist_ok=True)
        (folder / "checkpoints" / "0000001.pt").write_text("step 1")
        print("stopped by SIGINT after step 1; checkpoint saved")
        sys.exit(130)
    signal.signal(signal.SIGINT, stop)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "started").write_text("")
    time.sleep(120)
elif args[0] == "eval":
    Path(opt("--output")).write_text("{}")
"""

DRIVER = """
import sys
sys.path.insert(0, sys.argv[1])
import run
run.executable = lambda name: [sys.executable] + ([sys.argv[2]] if name == "sra" else [])
run.train_flags = lambda: {"--log-every", "--no-progress"}
sys.exit(run.main(sys.argv[3:]))
"""


def test_ctrl_c_ends_the_runner_in_one_line_with_130_and_every_run_resumable(tmp_path):
    """Ctrl-C (SIGINT to the runner's process group, as a terminal sends it) while `sra train` runs: the runner waits
    for the command to save its checkpoint, starts no other run, prints one line and exits 130; the same command
    then resumes the run from its checkpoint. A stand-in for `sra` keeps it to seconds."""
    import os
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "fake_sra.py").write_text(FAKE_SRA)  # not sra.py: it would hide the package
    (tmp_path / "driver.py").write_text(DRIVER)
    runs_dir = tmp_path / "runs"
    argv = [sys.executable, str(tmp_path / "driver.py"), str(ROOT / "experiments"), str(tmp_path / "fake_sra.py"),
            "--table", str(tiny_table(tmp_path, seeds="[0, 1]")), "--runs-dir", str(runs_dir), "--jobs", "1"]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while not (runs_dir / "m-s0" / "started").exists():
        assert p.poll() is None and time.time() < deadline, p.communicate()
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, (out, err)
    assert "Traceback" not in out + err and len(err.strip().splitlines()) == 1 and "stopped by Ctrl-C" in err
    assert (runs_dir / "m-s0" / "checkpoints" / "0000001.pt").exists()  # waited for: the stand-in saves after 1 s
    assert not (runs_dir / "m-s1").exists()  # nothing started after Ctrl-C
    assert "checkpoint saved" in (runs_dir / "logs" / "m-s0.log").read_text()
    # resumable: the same command (a dry run of it) trains both runs to step 2 and scores them
    done = subprocess.run(argv + ["--dry-run"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    cmds = [l.split()[1] for l in done.stdout.splitlines() if not l.startswith("#")]
    assert cmds == ["train", "eval", "train", "eval"] and "--max-train-steps 2" in done.stdout
