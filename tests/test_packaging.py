"""The package as a user installs it: a wheel built from the source tree installs into a fresh virtual environment,
where `sra --version` and `sra --help` run from the installed copy (not this checkout). Nothing is downloaded: the
wheel is built without build isolation and installed with --no-deps --no-index; the fresh environment sees this
environment's dependencies (torch, ...) through one .pth line, after its own site-packages."""
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

import sra

ROOT = Path(__file__).resolve().parents[1]


def run(*cmd, cwd=None):
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from a copy of what a clone holds (pyproject, README, LICENSE, src/), so that the build leaves
    no build/ or egg-info in the working tree; with its verbose build log."""
    src = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    log = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-v",
              "-w", src / "dist", src, cwd=src)
    wheels = list((src / "dist").glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0], log


def test_wheel_metadata_marker_and_no_deprecation(wheel):
    path, log = wheel
    # setuptools warns (BuildBackendWarning / SetuptoolsDeprecationWarning) about deprecated pyproject fields, e.g.
    # `project.license` as a table; the build must print none.
    assert "deprecat" not in log.lower(), [line for line in log.splitlines() if "eprecat" in line]
    assert path.name == f"sra_diffusion-{sra.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(path) as z:
        names = set(z.namelist())
        meta = z.read(f"sra_diffusion-{sra.__version__}.dist-info/METADATA").decode()
        entry = z.read(f"sra_diffusion-{sra.__version__}.dist-info/entry_points.txt").decode()
    assert {"sra/py.typed", "sra/cli.py", "sra/models/diffusers_sit/pipeline_sit.py",
            "sra/models/diffusers_sit/modeling_sit.py"} <= names  # the files SiT exports ship
    assert {"Name: sra-diffusion", f"Version: {sra.__version__}", "License-Expression: MIT"} <= set(meta.splitlines())
    assert "sra = sra.cli:main" in entry


def test_wheel_installs_into_a_fresh_venv_and_the_command_runs(wheel, tmp_path):
    path, _ = wheel
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    py, exe = venv / "bin" / "python", venv / "bin" / "sra"
    fresh_site = Path(run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())
    # the dependencies, from this environment, after the fresh one's own site-packages (a plain path line: the
    # editable install's finder in this environment is not activated, so `sra` can only come from the wheel)
    (fresh_site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", path)

    assert run(exe, "--version").strip() == f"sra {sra.__version__} (distribution sra-diffusion)"
    help_text = run(exe, "--help")
    assert "usage: sra" in help_text and "export" in help_text and "train" in help_text
    where = run(py, "-c", "import importlib.metadata as m, sra, pathlib; "
                          "print(pathlib.Path(sra.__file__).parent); print(m.version('sra-diffusion'))").split()
    assert Path(where[0]) == fresh_site / "sra" and (fresh_site / "sra" / "py.typed").is_file()
    assert where[1] == sra.__version__
