"""Reading and writing the files Lamina owns: atomic writes, and TOML read as data only."""
from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path

from .errors import ConfigError


def atomic_write(path, payload: bytes | str) -> None:
    """Write `payload` to a temporary file beside `path`, flush it to disk and rename it into
    place, so a crash leaves either the old file or the new one, never half of one."""
    path = Path(path)
    data = payload.encode() if isinstance(payload, str) else payload
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_toml(path, what: str) -> dict:
    """The data in TOML file `path` (never executed); `what` names it in errors ("recipe", ...)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{what} file {path} does not exist") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{what} {path}: invalid TOML: {err}") from err
