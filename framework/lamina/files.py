"""Reading and writing the files Lamina owns: atomic writes, and TOML read as data only."""
from __future__ import annotations

import os
import secrets
import tomllib
from pathlib import Path

from .errors import ConfigError


def atomic_write(path, payload: bytes | str) -> None:
    """Write `payload` to a temporary file beside `path`, flush it to disk and rename it into
    place, so a crash leaves either the old file or the new one, never half of one. The file gets
    the permissions a plain open(path, "w") would give it (0666 less the umask; tempfile.mkstemp's
    would be 0600, unreadable by anyone else), or those of the file it replaces."""
    path = Path(path)
    data = payload.encode() if isinstance(payload, str) else payload
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)      # the umask applies, as for open()
    try:
        with os.fdopen(fd, "wb") as f:
            if path.exists():
                os.chmod(f.fileno(), path.stat().st_mode & 0o7777)
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
