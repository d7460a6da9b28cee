"""Shared fixtures: every test starts from the default config and dtype.

Without an NVIDIA GPU, the CUDA backend's kernels run in Numba's simulator; numba reads the switch
when it is first imported, so it is set here, before any test imports it."""
import os

if "NUMBA_ENABLE_CUDASIM" not in os.environ and not os.path.exists("/dev/nvidiactl"):
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import pytest  # noqa: E402

import lamina  # noqa: E402
from lamina import config  # noqa: E402


@pytest.fixture(autouse=True)
def clean_settings(monkeypatch, tmp_path_factory):
    """No CLI flags, no user config file, no backend env vars leaking between tests."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("xdg")))
    monkeypatch.delenv("LAMINA_BACKEND", raising=False)
    monkeypatch.delenv("LAMINA_DISABLE_PLUGINS", raising=False)
    monkeypatch.delenv("LAMINA_DASK_SCHEDULER", raising=False)
    config.set_flag("backend", None)
    yield
    config.set_flag("backend", None)
    lamina.set_default_dtype("float32")


def pytest_addoption(parser):
    parser.addoption("--simulator-slow", action="store_true",
                     help="also run the tests marked simulator_slow in Numba's CUDA simulator (minutes each); "
                          "on a GPU they always run")


def pytest_collection_modifyitems(config, items):
    """Under the CUDA simulator, leave out the tests marked simulator_slow unless --simulator-slow."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") in ("", "0") or config.getoption("--simulator-slow"):
        return
    slow = [item for item in items if item.get_closest_marker("simulator_slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("simulator_slow")]
