"""Image files <-> NHWC float arrays with Pillow: pixels in [0, 1], one image per file.

`load_image` returns float32 (1, n_H, n_W, n_C) (n_C = 3 for "RGB", 1 for "L"), optionally
resized; `save_image` clips to [0, 1], rounds to 8 bits and writes atomically
(`lamina.files.atomic_write`), in the format the file's suffix names.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .errors import LaminaError, ShapeError
from .files import atomic_write

MODES = {"RGB": 3, "L": 1}


def target_size(n_H: int, n_W: int, size) -> tuple[int, int]:
    """(n_H, n_W) after resizing: `size` None keeps them, an int is the longer side (aspect ratio
    kept, each side at least 1), a pair (n_H, n_W) is exact."""
    if size is None:
        return n_H, n_W
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        if size < 1:
            raise LaminaError(f"load_image: size must be a positive int or (n_H, n_W), got {size!r}")
        scale = size / max(n_H, n_W)
        return max(1, round(n_H * scale)), max(1, round(n_W * scale))
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise LaminaError(f"load_image: size must be a positive int or (n_H, n_W), got {size!r}") from None
    if h < 1 or w < 1:
        raise LaminaError(f"load_image: size must be a positive int or (n_H, n_W), got {size!r}")
    return h, w


def load_image(path, size=None, mode: str = "RGB") -> np.ndarray:
    """The image at `path` as float32 (1, n_H, n_W, n_C) with x = pixel / 255 ∈ [0, 1].

    `size`: None (as stored), an int (the longer side; aspect ratio kept) or (n_H, n_W); resizing
    uses Lanczos filtering. `mode`: "RGB" (n_C = 3) or "L" (grey, n_C = 1); other modes (palette,
    RGBA, CMYK ...) are converted (alpha is dropped).
    """
    from PIL import Image, UnidentifiedImageError

    if mode not in MODES:
        raise LaminaError(f"load_image: mode must be one of {', '.join(MODES)}, got {mode!r}")
    path = Path(path)
    if not path.exists():
        raise LaminaError(f"load_image: image file {path} does not exist")
    if not path.is_file():
        raise LaminaError(f"load_image: {path} is not a file")
    try:
        with Image.open(path) as img:
            img.load()
            img = img.convert(mode)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise LaminaError(f"load_image: {path} is not an image Pillow can read: {err}") from err
    h, w = target_size(img.height, img.width, size)
    if (h, w) != (img.height, img.width):
        img = img.resize((w, h), Image.Resampling.LANCZOS)
    x = np.asarray(img, dtype=np.float32) / 255.0
    return x.reshape(1, h, w, MODES[mode])


def to_uint8(x) -> np.ndarray:
    """(n_H, n_W, n_C) uint8 from (1, n_H, n_W, n_C), (n_H, n_W, n_C) or (n_H, n_W) values in [0, 1]
    (clipped first; NaN becomes 0), n_C ∈ {1, 3, 4}."""
    x = np.asarray(x.numpy() if hasattr(x, "numpy") else x, dtype=np.float64)
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ShapeError(f"save_image: expected one image (1, n_H, n_W, n_C), got a batch of shape {x.shape}")
        x = x[0]
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or x.shape[2] not in (1, 3, 4) or x.shape[0] < 1 or x.shape[1] < 1:
        raise ShapeError(f"save_image: expected an image of shape (n_H, n_W, n_C) with n_C 1, 3 or 4, "
                         f"got {x.shape}")
    return np.round(np.clip(np.nan_to_num(x, nan=0.0), 0.0, 1.0) * 255.0).astype(np.uint8)


def image_format(path) -> str:
    """The Pillow format that `path`'s suffix names ("PNG" for .png), or a LaminaError naming the file."""
    from PIL import Image

    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise LaminaError(f"save_image: cannot write {path}: the suffix {path.suffix!r} names no image format "
                          f"Pillow writes (use .png or .jpg)")
    return fmt


def save_image(path, x) -> Path:
    """Write image `x` (values in [0, 1], clipped) to `path` in the format its suffix names
    (.png, .jpg, ...), atomically. Returns the path."""
    from PIL import Image

    path = Path(path)
    fmt = image_format(path)
    pixels = to_uint8(x)
    img = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels)
    if not path.parent.is_dir():
        raise LaminaError(f"save_image: folder {path.parent} does not exist (writing {path})")
    buffer = io.BytesIO()
    try:
        img.save(buffer, format=fmt)
    except (KeyError, ValueError, OSError) as err:
        raise LaminaError(f"save_image: cannot write {path} as {fmt}: {err}") from err
    atomic_write(path, buffer.getvalue())
    return path
