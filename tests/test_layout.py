"""The package's structure: imports point one way down the layout of the README (models, process, objectives,
encoders, data, evaluation, train, analysis, commands). How few files name the process: tests/test_structure.py."""
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "sra"

# Each unit may import the units listed before it, and the shared utilities; nothing imports a later one. The REPA
# encoders import no other unit (the FD-FMNIST classifier is handed in); data/ runs them when it stores REPA targets.
# Evaluation (with `generate`, sampling at evaluation scale) comes before train: the loop evaluates its EMA while
# training and hands the REPA encoder the FD-FMNIST classifier; the models, processes, terms and encoders never import
# it. Analysis (probes, PCA maps, curves) reads trained models and run folders, for the commands. `bench` times the
# training step with the loop's own step body, inside train (train/bench.py).
ORDER = [
    {"models"},
    {"process"},
    {"objectives"},
    {"encoders"},
    {"data"},
    {"generate", "evaluation"},
    {"train"},
    {"analysis"},
    {"commands", "cli"},
]
SHARED = {"options", "distributed", "checkpoint", "runfolder", "estimate", "__init__", "__main__", "__version__"}


def unit_of(parts: tuple[str, ...]) -> str:
    return parts[0][:-3] if len(parts) == 1 and parts[0].endswith(".py") else parts[0]


def level(unit: str) -> int | None:
    return next((i for i, units in enumerate(ORDER) if unit in units), None)


def imports(f: Path):
    """(imported unit, line) of every relative import of `f` that leaves its own unit."""
    pkg = f.relative_to(SRC).parts[:-1]
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(pkg)[: len(pkg) - (node.level - 1)]
            target = base + (node.module.split(".") if node.module else [node.names[0].name])
            yield target[0] if target else "", node.lineno


def test_imports_point_down_the_layout():
    wrong = []
    for f in SRC.rglob("*.py"):
        mine = unit_of(f.relative_to(SRC).parts)
        if level(mine) is None:
            continue
        for unit, line in imports(f):
            if unit != mine and unit not in SHARED and (level(unit) is None or level(unit) > level(mine)):
                wrong.append(f"{f.relative_to(SRC)}:{line} imports {unit}")
    assert not wrong, wrong


def test_training_does_not_import_evaluation_for_its_terms():
    """The REPA encoder and the terms never reach into evaluation/ (in-training evaluation is the loop's option)."""
    files = [*(SRC / "objectives").rglob("*.py"), *(SRC / "process").rglob("*.py"), *(SRC / "encoders").rglob("*.py")]
    assert SRC / "encoders" / "__init__.py" in files
    for f in files:
        assert "evaluation" not in {unit for unit, _ in imports(f)} and "sra.evaluation" not in f.read_text(), f
