"""benchmarks/gpu.py --quick in Numba's simulator: the GPU session's script runs end to end (its timings,
the memory-pool line and the table), so it does not rot between sessions that have a GPU."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.simulator_slow
def test_the_gpu_script_runs_at_quick_sizes(tmp_path):
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    out = tmp_path / "report.md"
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--quick", "--skip-tests",
                             "--out", str(out)], env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = out.read_text()
    assert "| work | Lamina CUDA |" in report and "Device memory pool:" in report
    for work in ("matmul 16³ float32", "conv2d 2×5×5×3 → 2", "LSTM 2×3×4 → 3, fwd+bwd (persistent)",
                 "LSTM 2×3×4 → 3, fwd+bwd (step by step)", "digits-mlp, one epoch", "per call: kernel launch",
                 "per call: 1 MiB device allocation", "per call: one-element add"):
        row = next(line for line in report.splitlines() if line.startswith(f"| {work}"))
        assert "failed" not in row, row
