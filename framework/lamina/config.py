"""Settings and where each came from. Highest first: a CLI flag, the environment,
./lamina.toml, the user file ($XDG_CONFIG_HOME/lamina/config.toml), the default.

Config files are TOML, read with `tomllib`: data only, never executed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, close_matches
from .files import read_toml

DEFAULTS = {"backend": "cpu", "disabled_plugins": [], "dask_scheduler": ""}
ENV_VARS = {"backend": "LAMINA_BACKEND", "disabled_plugins": "LAMINA_DISABLE_PLUGINS",
            "dask_scheduler": "LAMINA_DASK_SCHEDULER"}
#: settings whose value is one string ("" = unset)
STRING_SETTINGS = ("backend", "dask_scheduler")
PROJECT_FILE = "lamina.toml"

_flags: dict[str, object] = {}
_cache: dict[tuple, "Settings"] = {}


@dataclass(frozen=True)
class Setting:
    value: object
    source: str


@dataclass(frozen=True)
class Settings:
    backend: Setting
    disabled_plugins: Setting
    dask_scheduler: Setting

    def items(self):
        return [(name, getattr(self, name)) for name in DEFAULTS]


def user_config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "lamina" / "config.toml"


def read_config_file(path: Path) -> dict:
    """The settings in a TOML file (empty if it does not exist); unknown keys are an error."""
    if not path.is_file():
        return {}
    data = read_toml(path, "config")
    for key in data:
        if key not in DEFAULTS:
            raise ConfigError(f"{path}: unknown setting {key!r}.{close_matches(key, DEFAULTS)} "
                              f"Known settings: {', '.join(DEFAULTS)}")
    for key in STRING_SETTINGS:
        if key in data and not isinstance(data[key], str):
            raise ConfigError(f"{path}: {key!r} must be a string, got {data[key]!r}")
    if "disabled_plugins" in data and not (isinstance(data["disabled_plugins"], list)
                                           and all(isinstance(n, str) for n in data["disabled_plugins"])):
        raise ConfigError(f"{path}: 'disabled_plugins' must be a list of names, got {data['disabled_plugins']!r}")
    return data


def _file_version(path: Path) -> tuple:
    """What identifies a config file's content cheaply: its path, mtime and size (or absence)."""
    try:
        stat = path.stat()
    except OSError:
        return (str(path), None)
    return (str(path), stat.st_mtime_ns, stat.st_size)


def set_flag(name: str, value) -> None:
    """Record a value given on the command line (highest precedence); None removes it."""
    if value is None:
        _flags.pop(name, None)
    else:
        _flags[name] = value
    _cache.clear()


def resolve() -> Settings:
    """Every setting's effective value and its source."""
    files = (user_config_path(), Path.cwd() / PROJECT_FILE)
    env = tuple(os.environ.get(v) for v in ENV_VARS.values())
    key = (tuple(map(_file_version, files)), env, tuple(sorted(_flags.items(), key=str)))
    cached = _cache.get(key)
    if cached is not None:
        return cached
    values = {name: Setting(default, "default") for name, default in DEFAULTS.items()}
    for path in files:
        for name, value in read_config_file(path).items():
            values[name] = Setting(value, str(path))
    for name, var in ENV_VARS.items():
        raw = os.environ.get(var)
        if raw:
            value = raw if name in STRING_SETTINGS else [p.strip() for p in raw.split(",") if p.strip()]
            values[name] = Setting(value, f"environment variable {var}")
    for name, value in _flags.items():
        values[name] = Setting(value, f"--{name} flag")
    settings = Settings(**values)
    _cache.clear()
    _cache[key] = settings
    return settings
