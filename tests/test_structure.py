"""Structural promises, measured on the code itself (every lookup, dispatch and literal, not only `if` conditions):
the process is named in few places outside process/, terms' parameters stay with their terms, the benchmark runs the
loop's step body, the spec is resolved in one function, and no import shim is left."""
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "sra"

# Everything that names a model family or a process: identifiers (names, attributes, arguments, definitions,
# imports) and string literals.
FAMILY_NAMES = {"family", "learn_sigma", "family_of", "FAMILIES", "Family", "LEARNED_VARIANCE", "FlowProcess",
                "DDPMProcess", "process_for", "FlowConfig", "DDPMConfig"}
FAMILY_STRINGS = {"SiT", "DiT", "flow", "ddpm"}

# The files outside process/ allowed to name one, and why.
ALLOWED = {
    "models/presets.py": "the presets: a family's default process and output layout",
    "train/defaults.py": "the defaults table, one row per (process, size) and per process",
    "models/loading.py": "the released-checkpoint loader: the one place weights decide the process (files that carry "
                         "no spec), and reading specs written before the process section",
    "models/dit.py": "the backbone's output layout: learned variance doubles its output channels",
    "models/export.py": "export formats: diffusers' DiT needs the learned-variance layout; the model card's title and "
                        "tags by the process",
}


def family_mentions(tree: ast.AST) -> list[tuple[int, str]]:
    hits = []
    for n in ast.walk(tree):
        names = []
        if isinstance(n, ast.Name):
            names = [n.id]
        elif isinstance(n, ast.Attribute):
            names = [n.attr]
        elif isinstance(n, ast.arg):
            names = [n.arg]
        elif isinstance(n, (ast.FunctionDef, ast.ClassDef)):
            names = [n.name]
        elif isinstance(n, ast.alias):
            names = [n.name.split(".")[-1], n.asname or ""]
        elif isinstance(n, ast.keyword):
            names = [n.arg or ""]
        elif isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in FAMILY_STRINGS:
            hits.append((n.lineno, repr(n.value)))
        hits += [(n.lineno, name) for name in names if name in FAMILY_NAMES]
    return hits


def files_naming_the_family() -> dict[str, list]:
    out = {}
    for f in sorted(SRC.rglob("*.py")):
        rel = str(f.relative_to(SRC))
        if rel.startswith("process/"):
            continue
        hits = family_mentions(ast.parse(f.read_text()))
        if hits:
            out[rel] = hits
    return out


def test_the_counter_sees_lookups_literals_and_keywords():
    code = "a = PROCESSES['flow']\nb = m.learn_sigma\nc = f(family=1)\nfrom x import FlowProcess\nd = 'SiT'"
    assert {h for _, h in family_mentions(ast.parse(code))} == {"'flow'", "learn_sigma", "family", "FlowProcess",
                                                                  "'SiT'"}


def test_at_most_five_files_outside_process_name_a_family_or_a_process():
    found = files_naming_the_family()
    assert len(found) <= 5 and set(found) <= set(ALLOWED), {k: v[:3] for k, v in found.items() if k not in ALLOWED}


def names_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)} | \
        {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def test_term_parameters_live_with_their_terms():
    """SRA's head is the backbone's (released checkpoints and the public API name it); REPA's projector is the REPA
    term's. Outside the files that own or shard them, no code names them."""
    head = {str(f.relative_to(SRC)) for f in SRC.rglob("*.py") if "ap_head" in names_in(f)}
    assert head <= {"models/dit.py", "objectives/align.py", "train/parallel.py"}, head
    projector = {str(f.relative_to(SRC)) for f in SRC.rglob("*.py")
                 if {"projectors", "repa_projector"} & names_in(f)}
    assert projector <= {"objectives/repa.py"}, projector


def test_the_benchmark_has_no_forward_or_backward_of_its_own():
    """`sra bench` times train/step.py's run_step (and the SRA term's own teacher path): it calls no backward, no
    objective, no forward_features, no loss combination itself."""
    bench = SRC / "train" / "bench.py"
    assert not (SRC / "bench.py").exists()
    used = names_in(bench)
    assert "run_step" in used and "build_step" in used
    assert not {"backward", "forward_features", "combine", "teacher_tokens", "optimizer_update"} & used


def test_the_spec_is_resolved_in_one_function_called_at_the_edge():
    """`resolve_spec` is called by `sra train` (and its --dry-run) and by `sra bench`; the spec's `resolve` (a module
    function of train/config.py, called by bare name or as `config.resolve`) only inside it; no spec method resolves
    itself any more (`.resolve(...)` elsewhere is a path's, a term's defaults or the sampler options')."""
    callers: dict[str, set] = {"resolve_spec": set(), "resolve": set()}
    for f in SRC.rglob("*.py"):
        for n in ast.walk(ast.parse(f.read_text())):
            if not isinstance(n, ast.Call):
                continue
            if isinstance(n.func, ast.Name) and n.func.id in callers:
                callers[n.func.id].add(str(f.relative_to(SRC)))
            elif isinstance(n.func, ast.Attribute) and n.func.attr in callers and \
                    ast.unparse(n.func.value) in ("config", "train.config", "sra.train.config"):
                callers[n.func.attr].add(str(f.relative_to(SRC)))
    assert callers["resolve_spec"] == {"commands/train.py", "train/bench.py"}
    assert callers["resolve"] == {"train/config.py"}
    from sra.train.config import TrainConfig
    assert not hasattr(TrainConfig, "resolve") and not hasattr(TrainConfig, "validate")


def test_no_import_shims_are_left():
    assert not (SRC / "sampling.py").exists() and not (SRC / "diffusion").exists() and not (SRC / "transport").exists()
    init = ast.parse((SRC / "train" / "__init__.py").read_text())
    assert not [n for n in init.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    for f in SRC.rglob("*.py"):
        assert not {"FlowObjective", "DiffusionObjective"} & names_in(f), f
