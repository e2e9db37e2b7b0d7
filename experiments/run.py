"""Run a study's table (experiments/fmnist_study.yaml) through the `sra` command line: nothing else.

Each run trains to each evaluated (or probed) step in turn with `sra train` (the same command again resumes it), then
`sra eval --metric fmnist` scores that checkpoint's EMA and `sra probe` probes it; the deep section also measures the
block-pair linearity with benchmarks/fmnist_token_similarity.py; at the end `sra plot` draws each section's curves.
Every output is a file in the run folder, and a step whose file exists is not redone, so re-running this script after
any interruption continues where it stopped and a complete run is skipped. Runs go --jobs at a time, each command with
--threads torch threads. A row whose flags `sra train --help` does not list is skipped with one line (the table may
name flags that are not there yet).

Everything is checked before the first run starts, each refusal one line naming the table entry and key: every key's
type and range (seeds non-negative integers, 1 <= eval steps <= steps, no key given twice), run names that are plain
folder names, and every file the runner and its commands write inside --runs-dir (no link on the way). Ctrl-C (which
the terminal sends to the commands too: `sra train` saves a checkpoint) starts nothing more, waits for the commands in
progress and ends with one line and exit status 130; the same command resumes.

    python experiments/run.py --dry-run                   # the exact commands still to run, nothing started
    python experiments/run.py --only main --jobs 2        # one section (resumable)
    python experiments/run.py --runs sra-s2,plain-s2      # some runs
    python experiments/report.py                          # then: collect the results, rewrite docs/RESULTS.md
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from sra.runfolder import RunFolderError, check_writable, inside
from table import TableError, TableLoader, check_table

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "experiments" / "fmnist_study.yaml"
SIMILARITY = ROOT / "benchmarks" / "fmnist_token_similarity.py"
RESULTS = ROOT / "benchmarks" / "results"  # where experiments/report.py collects the run folders' outputs


@dataclass
class Run:
    name: str               # run folder name: <method>-s<seed>
    section: str            # the table's section (main, ablation, family, deep, dit)
    method: str             # the method's name within its section
    label: str              # what the method changes, in words
    seed: int               # training seed
    steps: int              # optimizer steps
    eval_steps: list[int]   # checkpoints scored with sra eval
    flags: list[str]        # sra train flags: common, section, method
    probe_block: int = 0    # probed block (0: no probe)
    probe_steps: tuple = () # probed checkpoints
    similarity: dict | None = None  # block pairs, times and images of the linearity measure, at the probed steps
    planned: bool = False   # asked for, not run yet


def load_table(path: Path = TABLE) -> tuple[dict, list[Run]]:
    """The table and its runs, section by section, seed by seed; a table that cannot be read, repeats a key, lacks a
    required key or holds an entry of the wrong type or range ends in one line naming it."""
    try:
        table = yaml.load(Path(path).read_text(), Loader=TableLoader)
    except (OSError, yaml.YAMLError) as e:
        mark = getattr(e, "problem_mark", None)
        reason = (f"{e.problem or 'not YAML'} at line {mark.line + 1}, column {mark.column + 1}"
                  if mark is not None else (str(e).strip().splitlines() or [type(e).__name__])[0])
        raise SystemExit(f"error: cannot read the run table {path}: {reason}") from None
    except ValueError as e:  # a key given twice
        raise SystemExit(f"error: the run table {path}: {e}") from None
    try:
        return expand_table(table)
    except TableError as e:
        raise SystemExit(f"error: the run table {path}: {e}") from None
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        reason = (f"KeyError: {e.args[0]!r} in {e.args[1]}" if isinstance(e, KeyError) and len(e.args) == 2
                  else f"{type(e).__name__}: {e}")
        raise SystemExit(f"error: the run table {path} is not a study table ({reason}); see "
                         f"experiments/fmnist_study.yaml for the keys it needs") from None


def expand_table(table: dict) -> tuple[dict, list[Run]]:
    check_table(table)
    runs, where = [], {}
    for section, sec in table["sections"].items():
        probe = sec.get("probe") or {}
        for seed in sec["seeds"]:
            for i, m in enumerate(sec["methods"]):
                flags = shlex.split(table["common"].format(steps=sec["steps"]))
                flags += shlex.split(sec.get("flags", "")) + shlex.split(m.get("flags") or "")
                probed = seed in probe.get("seeds", [])
                name = f"{m['name']}-s{seed}"
                if name in where:  # one folder, two runs: the second would resume the first
                    raise TableError(f"sections.{section}.methods[{i}].name: run {name} is also a run of "
                                     f"{where[name]}; each run needs a folder of its own")
                where[name] = f"sections.{section}"
                runs.append(Run(name, section, m["name"], m["label"], seed, sec["steps"],
                                list(sec["eval_steps"]), flags, probe.get("block", 0) if probed else 0,
                                tuple(probe.get("steps", ())) if probed else (),
                                sec.get("similarity") if probed else None, bool(m.get("planned"))))
    return table, runs


# ----------------------------------------------------------------------------------------------------------------
# The table's shape: every key, its type and range, checked before anything runs (as `sra train` checks its config)
# ----------------------------------------------------------------------------------------------------------------

def checkpoint(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"{step:07d}.pt"


def eval_file(run_dir: Path, step: int, classifier: str = "cnn") -> Path:
    """`sra eval --metric fmnist [--classifier NAME]`'s file in a run folder."""
    return run_dir / f"eval_fmnist{'' if classifier == 'cnn' else '-' + classifier}_step{step}.json"


def probe_dir(run_dir: Path, step: int) -> Path:
    return run_dir / f"probe_step{step}"


def similarity_file(run_dir: Path, step: int, pair) -> Path:
    return run_dir / f"similarity_step{step}_{pair[0]}-{pair[1]}.jsonl"


def reached(run_dir: Path) -> int:
    steps = [int(p.stem) for p in (run_dir / "checkpoints").glob("*.pt") if p.stem.isdigit()]
    return max(steps, default=0)


def complete_lines(path: Path, n: int) -> bool:
    return path.exists() and len(path.read_text().splitlines()) == n


# ----------------------------------------------------------------------------------------------------------------
# A run's pending commands
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class Command:
    argv: list[str]
    output: Path | None = None   # a JSONL file the command appends to: removed first if a kill left it partial

    def __str__(self) -> str:
        return shlex.join(self.argv)


def read_jsonl(path: Path) -> list[dict]:
    """The rows of a JSONL file; a line cut by a kill is skipped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return rows


def collected(results_dir: Path | None = None) -> set[tuple[str, str, int]]:
    """("eval" | "probe", run, step) already in the study's results files (experiments/report.py collects them there;
    default: RESULTS)."""
    results_dir, out = results_dir or RESULTS, set()
    for kind, suffix in (("eval", ".jsonl"), ("probe", "_probe.jsonl")):
        out |= {(kind, r["run"], int(r["step"])) for r in read_jsonl(results_dir / f"fmnist_study{suffix}")
                if isinstance(r, dict) and "run" in r and "step" in r}
    return out


def commands(run: Run, table: dict, runs_dir: Path, data_dir: str | None = None,
             skip: set[tuple[str, str, int]] = frozenset()) -> list[Command]:
    """What is left to do for `run`, in order: for each target step, train to it (unless its checkpoint exists),
    then evaluate, probe and measure it (unless their files exist, or `skip` holds ("eval" | "probe", run, step):
    results collected before, e.g. by a run folder since deleted). Every path a command writes is checked to lie
    inside runs_dir (`written`)."""
    d = written(runs_dir, runs_dir / run.name)
    ev, pr = table["eval"], table.get("probe")
    data = ["--data-dir", data_dir] if data_dir else []
    out, at = [], reached(d)
    for step in sorted(set(run.eval_steps) | set(run.probe_steps) | {run.steps}):
        if not checkpoint(d, step).exists():
            if at >= step:  # a later checkpoint and not this one (deleted by hand): nothing can recreate it
                print(f"{run.name}: no checkpoint at step {step} (the run is past it); its evaluations are skipped")
                continue
            out.append(Command(["sra", "train", *run.flags, *data, "--max-train-steps", str(step), "--seed",
                                str(run.seed), "--output-dir", str(runs_dir), "--exp-name", run.name]))
            at = step
        ckpt = str(checkpoint(d, step))
        # the default classifier at every evaluated step; the independent ones (eval: independent) at the last, where
        # the default one scores the same checkpoint too (a retrained run is never exactly the collected one)
        independent = list(ev.get("independent", [])) if step == run.steps else []
        for clf in ["cnn"] + independent:
            if clf == "cnn" and ("eval", run.name, step) in skip and not independent:
                continue
            if step in run.eval_steps and not written(runs_dir, eval_file(d, step, clf)).exists():
                out.append(Command(["sra", "eval", "--metric", "fmnist", ckpt, "--num-samples", str(ev["samples"]),
                                    "--sample-steps", str(ev["sample_steps"]), "--seed", str(ev["seed"]),
                                    *(["--classifier", clf] if clf != "cnn" else []), "--no-progress",
                                    "--output", str(eval_file(d, step, clf))]))
        if step in run.probe_steps and not (written(runs_dir, probe_dir(d, step)) / "probe.json").exists() and \
                ("probe", run.name, step) not in skip:
            out.append(Command(["sra", "probe", ckpt, "--blocks", str(run.probe_block), "--times",
                                ",".join(f"{t:g}" for t in pr["times"]), "--max-train", str(pr["train"]),
                                "--max-test", str(pr["test"]), "--seed", str(pr["seed"]), *data, "--no-progress",
                                "--output-dir", str(probe_dir(d, step))]))
        for pair in (run.similarity or {}).get("pairs", []) if step in run.probe_steps else []:
            sim, f = run.similarity, written(runs_dir, similarity_file(d, step, pair))
            if not complete_lines(f, len(sim["times"])):
                out.append(Command(["python", str(SIMILARITY.relative_to(ROOT)), "--runs-dir", str(runs_dir),
                                    "--runs", f"{run.name}@{step}", "--blocks", f"{pair[0]},{pair[1]}",
                                    "--times", ",".join(f"{t:g}" for t in sim["times"]),
                                    "--images", str(sim["images"]), "--output", str(f)], output=f))
    return out


def written(runs_dir: Path, path: Path) -> Path:
    """PATH, a file the runner or one of its commands writes, refused in one line (RunFolderError) unless it lies
    inside runs_dir with no part that is a symbolic link (a linked run folder or log would put the writes elsewhere)."""
    return inside(runs_dir, path.relative_to(runs_dir))


def log_file(runs_dir: Path, run: Run) -> Path:
    return written(runs_dir, runs_dir / "logs" / f"{run.name}.log")


def check_runs_dir(runs_dir: Path) -> None:
    """A --runs-dir that is a file, or lies under one, is one line (also under --dry-run, which creates nothing)."""
    for folder in (runs_dir, *runs_dir.parents):
        if folder.exists():
            if not folder.is_dir():
                raise SystemExit(f"error: --runs-dir {runs_dir}: {folder} is a file, not a folder; choose another "
                                 f"--runs-dir or move the file away")
            return


def curves(runs: list[Run], runs_dir: Path) -> list[Command]:
    """`sra plot` of each section's run folders (losses and FD-FMNIST against steps): a look at the curves."""
    out = []
    for section in dict.fromkeys(r.section for r in runs):
        png = written(runs_dir, runs_dir / f"curves_{section}.png")
        have = [str(runs_dir / r.name) for r in runs if r.section == section and (runs_dir / r.name).is_dir()]
        if have:
            out.append(Command(["sra", "plot", *have, "--output", str(png)]))
    return out


def train_flags() -> set[str]:
    """The options `sra train --help` lists."""
    done = subprocess.run(executable("sra") + ["train", "--help"], capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"error: `sra train --help` failed (exit {done.returncode}): {last}")
    return listed_flags(done.stdout)


def listed_flags(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", help_text))


def unknown_flags(run: Run, known: set[str]) -> list[str]:
    return sorted({f.split("=")[0] for f in run.flags if f.startswith("--")} - known)


def executable(name: str) -> list[str]:
    """`sra` from this interpreter's environment (a venv need not be activated); `python` is this interpreter."""
    if name == "python":
        return [sys.executable]
    beside = Path(sys.executable).with_name(name)
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"error: no `{name}` command beside {sys.executable} or on PATH; install the project "
                         f"(`make install`) or run this script with the venv's python (.venv/bin/python)")
    return [found]


# ----------------------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------------------

def execute(run: Run, cmds: list[Command], log: Path, threads: int, stop: threading.Event) -> bool:
    """One run's commands in order, output appended to `log`; stops at the first failure, and before the next command
    once `stop` is set (Ctrl-C: the command in progress got the signal too, and is waited for)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if stop.is_set():
        return False
    # never through a link planted since the check (appending to it would write to its target)
    with open(log, "a", opener=lambda path, flags: os.open(path, flags | os.O_NOFOLLOW, 0o644)) as out:
        for c in cmds:
            if stop.is_set():
                return False
            if c.output is not None:
                c.output.unlink(missing_ok=True)  # an append cut short by a kill: measured again in full
            t0 = time.time()
            out.write(f"$ {c}\n")
            out.flush()
            rc = subprocess.run(executable(c.argv[0]) + c.argv[1:], stdout=out, stderr=subprocess.STDOUT, env=env,
                                cwd=ROOT).returncode
            if stop.is_set():  # interrupted: the runner's one line says what to do
                return False
            print(f"{run.name}: {' '.join(c.argv[:2])} {'done' if rc == 0 else f'FAILED (exit {rc})'} in "
                  f"{time.time() - t0:.0f} s", flush=True)
            if rc != 0:
                print(f"{run.name}: see {log}; re-running this script resumes it", flush=True)
                return False
    return True


def execute_all(todo: list[tuple[Run, list[Command]]], runs_dir: Path, jobs: int, threads: int) -> list[bool] | None:
    """Every run's commands, `jobs` runs at a time; None when Ctrl-C stopped them. SIGINT (from a terminal it reaches
    the commands too, which are in the runner's process group: `sra train` saves a checkpoint of its last step and
    exits) sets a flag instead of raising in the middle of the pool: no command starts after it, and the ones in
    progress are waited for, so every run is left resumable."""
    stop = threading.Event()
    main_thread = threading.current_thread() is threading.main_thread()  # only the main thread may set a handler
    old = signal.signal(signal.SIGINT, lambda signum, frame: stop.set()) if main_thread else None
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            ok = list(pool.map(lambda rc: execute(rc[0], rc[1], log_file(runs_dir, rc[0]), threads, stop), todo))
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, old)
    return None if stop.is_set() else ok


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--table", type=Path, default=TABLE, help="the run table (YAML)")
    ap.add_argument("--only", action="append", default=None, metavar="SECTION",
                    help="run only this section of the table (repeatable); default: all")
    ap.add_argument("--runs", default=None, help="comma-separated run names (e.g. plain-s0,sra-s0)")
    ap.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "study", help="parent of the run folders")
    ap.add_argument("--data-dir", default=None, help="Fashion-MNIST IDX folder (default: sra's: the system's)")
    ap.add_argument("--jobs", type=int, default=2, help="runs at a time (>= 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per command (OMP_NUM_THREADS; >= 1)")
    ap.add_argument("--skip-collected", action="store_true",
                    help="do not redo an evaluation or probe whose (run, step) is already in benchmarks/results (a run "
                         "retrained only for what is missing there, e.g. a new classifier's score); the last step is "
                         "still scored by every classifier, so that they score the same checkpoint")
    ap.add_argument("--dry-run", action="store_true", help="print the commands still to run and exit")
    return ap.parse_args(argv)


STOPPED = "stopped by Ctrl-C: the commands in progress were stopped (sra train saves a checkpoint first); run the " \
          "same command to resume"


def main(argv: list[str] | None = None) -> int:
    try:
        return study(parse(argv))
    except KeyboardInterrupt:  # while planning or plotting (the runs themselves end through execute_all)
        print(STOPPED, file=sys.stderr, flush=True)
        return 130


def study(opts: argparse.Namespace) -> int:
    """Check everything (the options, the table, every path written), then run what is left."""
    for flag, value in (("--jobs", opts.jobs), ("--threads", opts.threads)):
        if value < 1:
            raise SystemExit(f"error: {flag} must be >= 1 (got {value})")
    table, runs = load_table(opts.table)
    if opts.only:
        unknown = set(opts.only) - set(table["sections"])
        if unknown:
            raise SystemExit(f"error: no section {', '.join(sorted(unknown))} in {opts.table} "
                             f"(sections: {', '.join(table['sections'])})")
        runs = [r for r in runs if r.section in opts.only]
    if opts.runs:
        keep = set(opts.runs.split(","))
        missing = keep - {r.name for r in runs}
        if missing:
            raise SystemExit(f"error: no run {', '.join(sorted(missing))} in the selected sections")
        runs = [r for r in runs if r.name in keep]
    runs_dir = opts.runs_dir.resolve()
    check_runs_dir(runs_dir)
    known = train_flags()
    skip = collected() if opts.skip_collected else set()
    todo = []
    try:
        for run in runs:
            bad = unknown_flags(run, known)
            if bad:
                print(f"skip {run.name}: sra train does not list {', '.join(bad)} (the row stays in the table)")
                continue
            cmds = commands(run, table, runs_dir, opts.data_dir, skip)
            if not cmds:
                print(f"skip {run.name}: complete")
                continue
            log_file(runs_dir, run)
            todo.append((run, cmds))
        curves([r for r, _ in todo], runs_dir)  # its paths are checked now, before anything runs
        if not opts.dry_run and todo:
            check_writable(written(runs_dir, runs_dir / "logs"))
    except RunFolderError as e:
        raise SystemExit(f"error: {e}") from None
    if opts.dry_run:
        for run, cmds in todo:
            print(f"# {run.name}")
            for c in cmds:
                print(c)
        return 0
    print(f"{len(todo)} runs with work left: {', '.join(r.name for r, _ in todo) or 'none'}", flush=True)
    if not todo:
        return 0
    ok = execute_all(todo, runs_dir, opts.jobs, opts.threads)
    if ok is None:
        print(STOPPED, file=sys.stderr, flush=True)
        return 130
    try:
        plots = curves([r for r, _ in todo], runs_dir)
    except RunFolderError as e:  # a link put there while the runs ran
        print(f"warning: no curves drawn: {e}", flush=True)
        plots = []
    for c in plots:
        subprocess.run(executable("sra") + c.argv[1:], stdout=subprocess.DEVNULL, cwd=ROOT)
    print(f"{sum(ok)} of {len(ok)} runs finished their commands; the report: python experiments/report.py "
          f"--runs-dir {runs_dir}", flush=True)
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
