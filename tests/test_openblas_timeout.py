"""Importing lamina sets OpenBLAS's thread timeout before NumPy loads OpenBLAS (lamina/_openblas.py),
and keeps a value the user set."""
import os
import subprocess
import sys

import pytest

SHOW = "import lamina, os; print(os.environ['OPENBLAS_THREAD_TIMEOUT'])"


@pytest.mark.parametrize("preset, expected", [(None, "18"), ("25", "25")])
def test_importing_lamina_sets_the_openblas_thread_timeout(preset, expected):
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if preset:
        env["OPENBLAS_THREAD_TIMEOUT"] = preset
    out = subprocess.run([sys.executable, "-c", SHOW], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == [expected]


def test_the_timeout_is_set_before_numpy_is_imported():
    """-X importtime lists modules as they finish loading: lamina._openblas before any part of NumPy."""
    log = subprocess.run([sys.executable, "-X", "importtime", "-c", "import lamina"], capture_output=True,
                         text=True, check=True).stderr.splitlines()
    modules = [line.rsplit("|", 1)[-1].strip() for line in log if line.startswith("import time:")]
    first_numpy = next(i for i, name in enumerate(modules) if name.split(".")[0] == "numpy")
    assert modules.index("lamina._openblas") < first_numpy
