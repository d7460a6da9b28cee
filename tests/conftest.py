"""Shared fixtures: every test starts from the default config and dtype."""
import pytest

import lamina
from lamina import config


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
