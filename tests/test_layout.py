"""The package's structure: the model family is a process object (few files name it in a branch), and imports point
one way down the layout of the README (models, process, objectives, encoders, data, evaluation, train, analysis,
commands)."""
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "sra"

FAMILY_WORDS = {"family", "learn_sigma", "SiT", "DiT"}


def names_family(node: ast.AST) -> bool:
    """Whether an expression mentions the family: a name or attribute `family` / `learn_sigma`, or "SiT" / "DiT"."""
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and n.id in FAMILY_WORDS or isinstance(n, ast.Attribute) and n.attr in FAMILY_WORDS:
            return True
        if isinstance(n, ast.Constant) and n.value in FAMILY_WORDS:
            return True
    return False


def family_branch_files() -> list[str]:
    """Source files with a branch whose condition names the family: if / elif / while, a conditional expression,
    a comprehension's filter."""
    found = []
    for f in sorted(SRC.rglob("*.py")):
        tests = []
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.If, ast.IfExp, ast.While)):
                tests.append(node.test)
            elif isinstance(node, ast.comprehension):
                tests += node.ifs
        if any(names_family(t) for t in tests):
            found.append(str(f.relative_to(SRC)))
    return found


def test_at_most_four_files_branch_on_the_family():
    files = family_branch_files()
    assert len(files) <= 4, files


# Each unit may import the units listed before it, and the shared utilities; nothing imports a later one. The REPA
# encoders import no other unit (the FD-FMNIST classifier is handed in); data/ runs them when it stores REPA targets.
# Evaluation (with `generate`, sampling at evaluation scale) comes before train: the loop evaluates its EMA while
# training and hands the REPA encoder the FD-FMNIST classifier; the models, processes, terms and encoders never import
# it. Analysis (probes, PCA maps, curves) reads trained models and run folders, for the commands. `bench` times the
# training step, beside the commands.
ORDER = [
    {"models"},
    {"process"},
    {"objectives"},
    {"encoders"},
    {"data"},
    {"generate", "evaluation"},
    {"train"},
    {"analysis"},
    {"bench", "commands", "cli"},
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
