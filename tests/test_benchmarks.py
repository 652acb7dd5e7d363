"""The benchmark scripts run end to end on tiny inputs (``--quick``), so they cannot rot."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_every_benchmark_runs_quick(sample_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PNEUMOSEG_SAMPLE_DIR": str(sample_dir), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(tmp_path)], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["cases"]) == {"rle", "evaluate", "loading", "inference", "precision", "training"}
    for case in results["cases"].values():
        assert case["rows"], case
        for row in case["rows"]:
            assert 0 < row["min_s"] <= row["median_s"] <= row["max_s"], row
    markdown = (tmp_path / "RESULTS.md").read_text()
    assert "## Machine" in markdown and "CPU" in markdown and "## inference" in markdown


@pytest.mark.parametrize("case", ["rle"])
def test_only_keeps_previous_cases(sample_dir: Path, tmp_path: Path, case: str,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.__main__ import main

    monkeypatch.setenv("PNEUMOSEG_SAMPLE_DIR", str(sample_dir))
    (tmp_path / "results.json").write_text(json.dumps({"quick": True, "cases": {"evaluate": {
        "rows": [], "targets": [], "notes": [], "runtime_s": 1.0}}}))
    assert main(["--quick", "--only", case, "--out", str(tmp_path)]) == 0
    assert set(json.loads((tmp_path / "results.json").read_text())["cases"]) == {"evaluate", case}


def test_the_gpu_benchmark_runs_quick_on_the_cpu(sample_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PNEUMOSEG_SAMPLE_DIR": str(sample_dir), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "--gpu", "--quick", "--out", str(tmp_path)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results-gpu.json").read_text())
    (gpu,) = results["cases"].values()
    cases = [r["case"] for r in gpu["rows"]]
    for kind in ("classifier", "segmenter"):
        assert f"train step {kind} 64² batch 2 bf16 channels_last" in cases
        assert f"inference {kind} 64² batch 2 bf16" in cases
    assert any(c.startswith("data loader 64² 1 workers") for c in cases)
    assert any("one SIIM epoch" in note for note in gpu["notes"])
    assert "## gpu" in (tmp_path / "RESULTS-gpu.md").read_text()
