"""The study's data: the run table with where its results live, the results files, and the numbers the report
quotes (means, spreads, per-seed differences, step costs). Used by collect.py, figures.py and report.py."""
from __future__ import annotations

import shlex
from pathlib import Path

from run import Run, load_table, read_jsonl

STEM = "fmnist_study"  # results files: <results-dir>/fmnist_study.jsonl, _probe.jsonl, _similarity.jsonl, ...


class Study:
    """The run table and where its results live; the settings the prose quotes are read from the table's flags."""

    def __init__(self, table_path: Path, results_dir: Path, docs_dir: Path, runs_dir: Path):
        self.table_path = Path(table_path)
        self.table, runs = load_table(table_path)
        self.runs = {r.name: r for r in runs}
        self.results_dir, self.docs, self.runs_dir = Path(results_dir), Path(docs_dir), Path(runs_dir)
        sec = self.table["sections"]
        self.steps, self.seeds = sec["main"]["steps"], sec["main"]["seeds"]
        self.ablation_steps = sec["ablation"]["steps"]
        common = shlex.split(self.table["common"])
        self.half_life = float(common[common.index("--ema-half-life-kimg") + 1])
        self.log_every = int(common[common.index("--log-every") + 1])
        self.model = common[common.index("--model") + 1]
        self.probe_times = tuple(self.table["probe"]["times"])

    def file(self, suffix: str) -> Path:
        return self.results_dir / f"{STEM}{suffix}"

    def run(self, name: str) -> Run | None:
        return self.runs.get(name)

    def section_of(self, method: str, prefer: str) -> str:
        """The section that runs `method`: `prefer` when it does, else the first (main before family ...)."""
        have = [r.section for r in self.runs.values() if r.method == method]
        if not have:
            raise ValueError(f"the table's 'versus' names {method!r}, which no section runs")
        return prefer if prefer in have else have[0]

    def is_method(self, name: str, section: str, method: str | None = None) -> bool:
        r = self.runs.get(name)
        return r is not None and r.section == section and (method is None or r.method == method)

    def methods(self, section: str, rows: dict, probes: dict) -> list[tuple[str, str]]:
        """(name, label) of a section's methods; a planned one only once one of its runs has a result."""
        out = []
        for m in self.table["sections"][section]["methods"]:
            have = any(self.is_method(n, section, m["name"]) for n in [n for n, _ in rows] + list(probes))
            if have or not m.get("planned"):
                out.append((m["name"], m["label"]))
        return out


def latest_rows(path: Path) -> dict[tuple[str, int], dict]:
    """The last evaluation of each (run, step) (a redone evaluation replaces an earlier one)."""
    return {(r["run"], int(r["step"])): r for r in read_jsonl(path)}


def latest_probes(probes: list[dict]) -> dict[str, dict]:
    """run -> its latest probed step's row."""
    out = {}
    for r in sorted(probes, key=lambda r: r["step"]):
        out[r["run"]] = r
    return out


def mean_spread(values: list[float]) -> tuple[float, float]:
    """Mean and half the range (with 2 seeds: the distance of each seed from the mean)."""
    return sum(values) / len(values), (max(values) - min(values)) / 2


def fmt(values: list[float], digits: int = 1, scale: float = 1.0) -> str:
    if not values:
        return "—"
    m, h = mean_spread([v * scale for v in values])
    return f"{m:.{digits}f} ± {h:.{digits}f} (n={len(values)})" if len(values) > 1 else f"{m:.{digits}f} (n=1)"


def seed_spread(*groups: list[float]) -> float | None:
    """The largest max − min within any group of two or more seeds (None when no group has two)."""
    ranges = [max(v) - min(v) for v in groups if len(v) > 1]
    return max(ranges) if ranges else None


def by_method(study: Study, rows: dict, method: str, step: int, key: str, section: str = "main") -> list[float]:
    return [r[key] for (name, s), r in sorted(rows.items()) if s == step and study.is_method(name, section, method)]


def s_per_step(r: dict) -> str:
    return f"{r['train_seconds'] / r['step']:.2f}" if r.get("train_seconds") else "—"


def window_mean(curve: dict, key: str, step: int, width: int) -> float | None:
    v = [c[key] for s, c in curve.items() if step - width < int(s) <= step and key in c]
    return sum(v) / len(v) if v else None


def probe_cell(pr: dict | None, final: int) -> str:
    if not pr:
        return "—"
    return " / ".join(f"{100 * a:.1f}" for a in pr["accuracy"]) + (f" (step {pr['step']})" if pr["step"] != final
                                                                      else "")


def compared_methods(study: Study, rows: dict, probes: dict) -> list[dict]:
    """The methods of the comparison sections, each with its section's plain method and final step: main and family
    against main's plain, deep against its plain, dit against its plain. Only methods with a result."""
    out = []
    for section, baseline in (("main", ("plain", "main")), ("family", ("plain", "main")), ("deep", None),
                              ("dit", None)):
        if section not in study.table["sections"]:
            continue
        sec = study.table["sections"][section]
        shown = study.methods(section, rows, probes)
        base = baseline or (sec["methods"][0]["name"], section)
        for name, label in shown:
            runs = [r for (n, st), r in sorted(rows.items()) if st == sec["steps"] and study.is_method(n, section, name)]
            versus = next((m.get("versus") for m in sec["methods"] if m["name"] == name), None)
            if runs:
                out.append({"name": name, "label": label, "section": section, "step": sec["steps"], "runs": runs,
                            "baseline": base, "cost": step_cost(study, section, name),
                            "versus": versus and (versus, study.section_of(versus, section))})
    return out


def last_flag(words: list[str], flag: str) -> str | None:
    """The value of the last `flag` among command-line words (later flags win), None without it."""
    return words[len(words) - 1 - words[::-1].index(flag) + 1] if flag in words else None


def step_cost(study: Study, section: str, method: str) -> float | None:
    """The method's training step ÷ plain's, paired in `sra bench` (benchmarks/results/<stem>_cost.jsonl) on the
    section's model and depth (a bench record's `--depth` must be the run's); None when the table names no bench
    mode for it or no bench ran that model."""
    mode = next((m.get("cost") for m in study.table["sections"][section]["methods"] if m["name"] == method), None)
    flags = next(r.flags for r in study.runs.values() if r.section == section and r.method == method)
    if mode is None:
        return None
    want = (last_flag(flags, "--model"), last_flag(flags, "--depth"))
    bench = {(last_flag(words, "--model"), last_flag(words, "--depth")): r
             for r in read_jsonl(study.file("_cost.jsonl")) for words in [shlex.split(r["command"])]}.get(want)
    if bench is None:
        return None
    if mode in ("plain", "sra"):
        return 1.0 if mode == "plain" else bench["sra_over_plain_paired"]
    return bench.get("methods", {}).get(mode, {}).get("over_plain_paired")


def per_seed_delta(study: Study, rows_by_key: dict, method: dict, key: str) -> list[float]:
    """method's value minus its baseline's, seed by seed (seeds both have), from rows keyed (run, step)."""
    base_name, base_section = method["baseline"]
    base = {r["seed"]: r[key] for (n, st), r in rows_by_key.items()
            if st == method["step"] and study.is_method(n, base_section, base_name)}
    mine = [r for (n, st), r in sorted(rows_by_key.items())
            if st == method["step"] and study.is_method(n, method["section"], method["name"])]
    return [r[key] - base[r["seed"]] for r in mine if r["seed"] in base]


def verdict(deltas: list[float], span: float | None, scale: float) -> str:
    """Per-seed differences against plain: one sign in every seed? larger on average than plain's own seed span?"""
    if len(deltas) < 2:
        return "one seed: no verdict"
    sign = "lower" if max(deltas) < 0 else "higher" if min(deltas) > 0 else None
    if sign is None:
        return "the sign changes between seeds"
    if span is None:
        return f"{sign} in all {len(deltas)} seeds"
    beyond = abs(sum(deltas) / len(deltas)) > span
    return (f"{sign} in all {len(deltas)} seeds, {'beyond' if beyond else 'within'} plain's seed span "
            f"{span * scale:.1f}")
