"""_gemm.h's products are instantiated per instruction set (AVX-512, AVX2, baseline) and the widest the CPU
has runs; LAMINA_CPU_ISA caps it. The kernels built on them (the convolutions, Winograd, the recurrences,
_matmul) are run again, against the same oracles, on each narrower set."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNEL_TESTS = ["tests/test_cpu_kernels.py", "tests/test_convolution.py", "tests/test_recurrent.py"]


def instruction_set(env) -> str:
    return subprocess.run([sys.executable, "-c", "from lamina_cpu import _matmul; print(_matmul.instruction_set())"],
                          env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_the_widest_instruction_set_is_picked_by_default():
    env = {k: v for k, v in os.environ.items() if k != "LAMINA_CPU_ISA"}
    assert instruction_set(env) in ("avx512", "avx2", "baseline")
    assert instruction_set(dict(env, LAMINA_CPU_ISA="baseline")) == "baseline"


@pytest.mark.parametrize("isa", ["avx2", "baseline"])
def test_the_kernels_pass_their_tests_on_narrower_instruction_sets(isa):
    env = dict(os.environ, LAMINA_CPU_ISA=isa)
    if instruction_set(env) != isa:
        pytest.skip(f"this CPU has no {isa}")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *KERNEL_TESTS],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
