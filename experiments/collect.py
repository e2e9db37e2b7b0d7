"""collect: what experiments/run.py's commands left in the run folders (eval_fmnist[-<classifier>]_step<N>.json from
`sra eval`, probe_step<N>/probe.json from `sra probe`, the similarity JSONL files, metrics.jsonl's losses and
throughput) is added to the results files kept in the repository, benchmarks/results/fmnist_study*.jsonl /
_losses.json; a (run, step) already there is kept as it is. The run folders themselves stay out of the repository."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

from run import eval_file, probe_dir, similarity_file
from study import Study, read_jsonl


def append(path: Path, rows: list[dict]) -> None:
    if rows:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


def train_seconds(run_dir: Path, step: int) -> float | None:
    """Training time to `step`: the logged intervals (images / images_per_s), deduplicated by step across resumes."""
    cfg = json.loads((run_dir / "config.json").read_text()) if (run_dir / "config.json").exists() else {}
    log_every, batch = cfg.get("log_every", 50), cfg.get("batch_size", 64)
    per_step = {}
    for r in read_jsonl(run_dir / "metrics.jsonl"):
        if "images_per_s" in r and r["step"] <= step:
            span = r["step"] - (r["step"] - 1) // log_every * log_every  # steps in this logging interval
            per_step[r["step"]] = span * batch / r["images_per_s"]
    return sum(per_step.values()) if per_step else None


def collect(study: Study) -> int:
    """Add the run folders' new outputs to the results files; returns how many rows were added."""
    evals, probes, sims = study.file(".jsonl"), study.file("_probe.jsonl"), study.file("_similarity.jsonl")
    have_e = {(r["run"], int(r["step"])) for r in read_jsonl(evals)}
    have_p = {(r["run"], int(r["step"])) for r in read_jsonl(probes)}
    have_s = {(r["run"], int(r["step"]), tuple(r["blocks"]), r["t"]) for r in read_jsonl(sims)}
    new_e, new_p, new_s = [], [], []
    for run in study.runs.values():
        d = study.runs_dir / run.name
        if not d.is_dir():
            continue
        for step in sorted(set(run.eval_steps) | set(run.probe_steps)):
            f = eval_file(d, step)
            if f.exists() and (run.name, step) not in have_e:
                e = json.loads(f.read_text())
                new_e.append({"run": run.name, "step": step, "group": run.section, "label": run.label,
                              "seed": run.seed, "fd_fmnist": e["fd_fmnist"], "class_acc": e["class_acc"],
                              "num_samples": e["num_samples"], "sample_steps": e["sample_steps"],
                              "sampling_seed": e["seed"], "train_seconds": train_seconds(d, step),
                              "eval_seconds": None, "flags": shlex.join(run.flags)})
            f = probe_dir(d, step) / "probe.json"
            if f.exists() and (run.name, step) not in have_p:
                p = json.loads(f.read_text())
                new_p.append({"run": run.name, "step": step, "block": p["blocks"][0], "times": p["times"],
                              "accuracy": p["accuracy"][0], "num_train": p["num_train"], "num_test": p["num_test"]})
            for pair in (run.similarity or {}).get("pairs", []) if step in run.probe_steps else []:
                for r in read_jsonl(similarity_file(d, step, pair)):
                    key = (run.name, step, tuple(r["blocks"]), r["t"])
                    if key not in have_s:
                        have_s.add(key)
                        new_s.append({"run": run.name, "step": step, **{k: v for k, v in r.items() if k != "model"}})
    append(evals, new_e)
    append(probes, new_p)
    append(sims, new_s)
    collect_losses(study)
    return len(new_e) + len(new_p) + len(new_s) + collect_independent(study)


def collect_independent(study: Study) -> int:
    """The last step's scores by the independent classifiers (the table's eval: independent) into
    <results>_independent.jsonl, one row per (run, step, classifier), each with the default classifier's score of the
    same checkpoint (cnn_fd_fmnist, cnn_class_acc): a run retrained for this is not bit for bit the collected one, so
    the pair is kept together; a run folder without that score yet is left for later."""
    path = study.file("_independent.jsonl")
    have = {(r["run"], int(r["step"]), r["classifier"]) for r in read_jsonl(path)}
    new = []
    for run in study.runs.values():
        d = study.runs_dir / run.name
        for clf in study.table["eval"].get("independent", []):
            f, cnn = eval_file(d, run.steps, clf), eval_file(d, run.steps)
            if f.exists() and cnn.exists() and (run.name, run.steps, clf) not in have:
                e, c = json.loads(f.read_text()), json.loads(cnn.read_text())
                new.append({"run": run.name, "step": run.steps, "classifier": clf, "group": run.section,
                            "seed": run.seed, "fd_fmnist": e["fd_fmnist"], "class_acc": e["class_acc"],
                            "cnn_fd_fmnist": c["fd_fmnist"], "cnn_class_acc": c["class_acc"],
                            "num_samples": e["num_samples"], "sample_steps": e["sample_steps"],
                            "sampling_seed": e["seed"], "classifier_test_accuracy": e["classifier"]["test_accuracy"]})
    append(path, new)
    return len(new)


def collect_losses(study: Study) -> None:
    """Logged training losses of the table's run folders, merged into <results>_losses.json (kept when the run
    folders are gone): {run: {step: {"denoise": ..., "align": ...}}}, each value the mean over its logging interval."""
    path = study.file("_losses.json")
    losses = json.loads(path.read_text()) if path.exists() else {}
    changed = False
    for name in study.runs:
        curve = {str(r["step"]): {k: r[k] for k in ("denoise", "align") if k in r}
                 for r in read_jsonl(study.runs_dir / name / "metrics.jsonl") if "denoise" in r}
        if curve and len(curve) >= len(losses.get(name, {})) and curve != losses.get(name):
            losses[name] = curve  # a retraining still in progress does not replace a finished run's curve
            changed = True
    if changed:
        path.write_text(json.dumps(losses, indent=0, sort_keys=True) + "\n")
