"""`benchmarks/gpu_check.sh --dry-run`: every section of the GPU check runs on CPU at tiny sizes, as CI runs it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SECTIONS = (
    "packages", "(a) tests/train", "(b, c) loader_efficiency", "(d) search", "(e) out-of-memory", "(f) export",
    "(g) headline",
)  # fmt: skip


@pytest.mark.timeout(1200)  # about three minutes on an idle 2-core machine; far longer when it is shared
def test_the_gpu_check_dry_run_runs_every_section(tmp_path: Path) -> None:
    results = tmp_path / "results"
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run", str(results)],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=1180,
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    log = (results / "gpu_check.log").read_text()
    assert log == done.stdout  # everything it prints is kept in the results folder
    for section in SECTIONS:
        assert f"== {section}" in log and f"-- {section}" in log, section
    summary = (results / "summary.txt").read_text()
    assert summary.count("loader_efficiency") == 4  # 2 backbones x CPU and GPU augmentation
    assert summary.count("augment_device gpu") == 2 and summary.count("in memory") == 4
    assert "workers 1:" in summary and "workers 2:" in summary and "trials/minute" in summary
    assert "oom_retry recovered" in summary and "retried at batch 8 x 2 accumulation" in summary
    assert "predict: 56 images" in summary and "all sections passed" in summary
    # The headline: what the search did, where its time went, and what a 100-trial study would take.
    assert "demo data: 12 people" in summary and "fold-epochs trained" in summary
    assert "time shares of" in summary and "projection of a 100-trial study: 100 trials x" in summary
    assert (results / "export" / "export.json").is_file() and (results / "predictions.csv").is_file()


def test_the_gpu_check_needs_a_results_folder() -> None:
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True)
    assert done.returncode == 2 and "usage: bash benchmarks/gpu_check.sh [--dry-run] RESULTS_DIR" in done.stderr
