"""benchmarks/gpu_check.sh: its CPU part (the GPU part needs a GPU)."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402


def test_what_is_missing_is_said_before_anything_runs(monkeypatch, capsys):
    monkeypatch.setitem(gpu_check.REQUIRED, "no_such_module_xyz", "no-such-package")
    assert gpu_check.main(["--cpu", "--work", "/nonexistent/never/made"]) == 2
    err = capsys.readouterr().err
    assert "missing" in err and "no-such-package (import no_such_module_xyz" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_without_a_gpu_it_asks_for_one_or_for_cpu(capsys):
    assert gpu_check.main(["--work", "/nonexistent/never/made"]) == 2
    assert "a GPU visible to torch" in capsys.readouterr().err and "--cpu" in gpu_check.missing_requirements(False)[0]


@pytest.mark.slow
def test_the_gpu_check_runs_on_a_cpu_with_tiny_models_and_prints_one_table(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu", "--tiny", "--steps", "2",
                           "--work", str(tmp_path / "work"), "--json", str(tmp_path / "results.json")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("GPU check on CPU") and sum(line.startswith("stage ") for line in lines) == 1
    rows = {line.split()[0]: line for line in lines if line.split()[0] in gpu_check.STAGES}
    assert set(rows) == set(gpu_check.STAGES) and all(line.endswith("ok") for line in rows.values())
    results = {r["stage"]: r for r in json.loads((tmp_path / "results.json").read_text())}
    small, large, explain = (results[s] for s in gpu_check.STAGES)
    assert small["settings"].startswith("LoRA, fp32, batch 8, 4 batches")
    assert large["settings"].startswith("QLoRA+ckpt, fp32, batch 4, 4 batches")
    for r in (small, large):  # round_robin: the four batches are the four tasks
        assert r["tasks"] == ["asr", "emotion", "rationale", "va"] and r["losses_finite"]
        assert r["estimate"] > 0 and r["peak"] > 0
    assert "on cpu" in explain["settings"] and explain["estimate_what"] == "weights only"
