"""benchmarks/gpu_check.py on a machine without CUDA (one line, exit 0) and its goal arithmetic and table."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def load():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path")
def test_without_cuda_it_says_so_in_one_line_and_exits_0(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "r")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines() == ["gpu_check: no CUDA device on this machine; nothing to check"]
    assert not (tmp_path / "r").exists()


def bench_row(**kw):
    row = dict(model="SiT-XL/2", compile=False, step_s_plain=0.050, step_s_sra=0.055, tflops_sra=420.0,
               sra_over_plain_paired=1.10, ema_fraction=0.004, teacher_fraction=0.15, peak_mem_plain_mb=40000.0,
               peak_mem_sra_mb=44000.0)
    row.update(kw)
    return row


def test_goals_are_computed_from_the_bench_figures():
    g = load().goals(bench_row(), peak=1000.0)
    assert g["values"]["useful_flops_fraction"] == pytest.approx(0.42)
    assert g["values"]["memory_ratio"] == pytest.approx(1.1)
    assert g["met"] == {"useful_flops_fraction": True, "sra_over_plain": True, "ema_fraction": True,
                        "memory_ratio": False}
    g = load().goals(bench_row(tflops_sra=300.0, sra_over_plain_paired=1.3, ema_fraction=0.02), peak=1000.0)
    assert not any(g["met"][k] for k in ("useful_flops_fraction", "sra_over_plain", "ema_fraction"))
    # issue 38: SRA / plain <= 1.25; issue 39: <= 1.15 with the FP8 teacher
    assert load().goals(bench_row(sra_over_plain_paired=1.2), peak=1000.0)["met"]["sra_over_plain"]
    assert not load().goals(bench_row(sra_over_plain_paired=1.2, teacher_fp8=True), peak=1000.0)["met"]["sra_over_plain"]


def test_markdown_table_has_a_row_per_benchmark_and_marks_missed_goals():
    mod = load()
    b = bench_row()
    report = {"env": {"device": "GPU", "torch": "x", "cuda": "y", "matmul_tflops": 800.0}, "date": "d",
              "seconds": 60.0, "peak_tflops": 1000.0,
              "steps": {"cuda_tests": {"status": "ok", "seconds": 10, "summary": "9 passed"},
                        "bench_sit_xl2_eager": {"status": "ok", "seconds": 30, "bench": b,
                                                "goals": mod.goals(b, 1000.0)}}}
    text = mod.markdown(report)
    row = next(line for line in text.splitlines() if line.startswith("| SiT-XL/2 eager"))
    assert "42 %" in row and "1.100" in row and "(1.100x) ✗" in row and "50.0 ms" in row
    assert "| cuda_tests | ok — 9 passed | 10 s |" in text
