"""What are deep ConvNets learning? (§4.22; Zeiler & Fergus, "Visualizing and understanding
convolutional networks"): pick a unit (a channel) of a layer and find the k image patches of a
dataset that maximise its activation.

The patch of a unit is its receptive field: for each layer on the way (f, stride s, padding p
before), r ← r + (f − 1)·j, offset ← offset − p·j, j ← j·s, from r = j = 1 and offset 0 at the
input; unit (i, j) of the layer sees input rows offset + i·j_total ... offset + i·j_total + r − 1
(likewise columns), clipped at the image borders.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np

from .autograd import no_grad
from .errors import LaminaError, ShapeError
from .style import FeatureExtractor, frozen, layer_index
from .tensor import Tensor


@dataclass(frozen=True)
class ReceptiveField:
    """The input window of the units of a layer: `size` r (per side), `jump` (input pixels between
    neighbouring units) and `offset` (row, column) of unit (0, 0)'s top-left corner (negative where
    it reaches into the padding); `input_hw` is the input's (n_H, n_W), `output_hw` the layer's."""

    size: int
    jump: int
    offset: tuple[int, int]
    input_hw: tuple[int, int]
    output_hw: tuple[int, int]

    def window(self, i: int, j: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) of unit (i, j)'s window before clipping (bottom/right exclusive)."""
        top, left = self.offset[0] + i * self.jump, self.offset[1] + j * self.jump
        return top, left, top + self.size, left + self.size

    def box(self, i: int, j: int) -> tuple[int, int, int, int]:
        """unit (i, j)'s window clipped to the image: (top, left, bottom, right), bottom/right exclusive."""
        top, left, bottom, right = self.window(i, j)
        n_H, n_W = self.input_hw
        return max(top, 0), max(left, 0), min(bottom, n_H), min(right, n_W)


def _pointwise() -> tuple:
    from .nn import Activation, BatchNorm, Dropout, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh

    return Activation, BatchNorm, Dropout, LeakyReLU, ReLU, Sigmoid, Softmax, Tanh


def _windows(layer, where: str) -> list:
    """The (op name, f, stride, padding) of each sliding window `layer` applies, in order."""
    from .nn import Conv2D, ResidualBlock, Sequential
    from .nn.conv import _Pool2D

    if isinstance(layer, Conv2D):
        return [("Conv2D", layer.f, layer.stride, layer.padding)]
    if isinstance(layer, _Pool2D):
        return [(layer.op, layer.f, layer.stride, layer.padding)]
    if isinstance(layer, _pointwise()):
        return []
    if isinstance(layer, ResidualBlock):  # the main path; the 1×1 shortcut sees a part of its window
        return [w for name in ("conv1", "conv2", "conv3") if hasattr(layer, name)
                for w in _windows(getattr(layer, name), where)]
    if isinstance(layer, Sequential):
        return [w for i in range(len(layer)) for w in _windows(layer[i], where)]
    raise LaminaError(f"{where}: layer {layer.name!r} ({type(layer).__name__}) is not a convolution, pooling or "
                      f"element-wise layer, so the units after it have no local receptive field; choose a "
                      f"layer before it")


def receptive_field(model, layer, input_hw) -> ReceptiveField:
    """The receptive field of the units of `layer` (name or index) of Sequential `model` for inputs of
    spatial size `input_hw` = (n_H, n_W) (needed for "same" padding, which depends on the size)."""
    from .ops.convolution import axis_padding, output_size

    where = "receptive_field"
    n_H, n_W = (int(v) for v in input_hw)
    end = layer_index(model, layer, where)
    size, jump, offset, hw = 1, 1, [0, 0], [n_H, n_W]
    for k in range(end + 1):
        for op, f, stride, padding in _windows(model[k], where):
            for axis in (0, 1):
                before, after = axis_padding(op, hw[axis], f, stride, padding)
                offset[axis] -= before * jump
                hw[axis] = output_size(hw[axis], f, stride, (before, after))
                if hw[axis] < 1:
                    raise ShapeError(f"{where}: layer {model[k].name!r} gets a {f}×{f} window on an input "
                                     f"smaller than it (input {n_H}×{n_W})")
            size += (f - 1) * jump
            jump *= stride
    return ReceptiveField(size, jump, tuple(offset), (n_H, n_W), tuple(hw))


@dataclass
class Patch:
    """One of the top patches: example `image` of the dataset, the unit's position (row, col) in the
    layer, its `activation` there, the clipped `box` (top, left, bottom, right) in the image, the
    unclipped `window` and the `pixels` X[image, top:bottom, left:right]."""

    image: int
    row: int
    col: int
    activation: float
    box: tuple
    window: tuple
    pixels: np.ndarray


def unit_activations(model, layer, unit: int, X, batch_size: int = 128, progress: bool = False) -> np.ndarray:
    """a[n, i, j] = the activation of channel `unit` of `layer` at (i, j) for example n of X (m, n_H, n_W,
    n_C), computed in eval mode without gradients, `batch_size` examples at a time."""
    from tqdm.auto import tqdm

    X = np.asarray(X)
    if X.ndim != 4:
        raise ShapeError(f"top_patches: X must be NHWC images (m, n_H, n_W, n_C), got shape {X.shape}")
    extractor = FeatureExtractor(model, [layer])
    out = []
    starts = range(0, X.shape[0], int(batch_size))
    with frozen(model), no_grad():
        for start in tqdm(starts, unit="batch", file=sys.stderr, dynamic_ncols=True, leave=False,
                          disable=not progress, desc="activations"):
            A = extractor(Tensor(X[start:start + int(batch_size)]))[layer]
            if A.ndim != 4:
                raise ShapeError(f"top_patches: layer {layer!r} gives {A.shape}, not NHWC maps (m, n_H, n_W, n_C)")
            if not 0 <= unit < A.shape[3]:
                raise LaminaError(f"top_patches: unit must be a channel of layer {layer!r}, 0 to {A.shape[3] - 1}, "
                                  f"got {unit}")
            out.append(A.numpy()[..., unit])
    return np.concatenate(out, axis=0)


def top_patches(model, layer, unit: int, X, k: int = 9, batch_size: int = 128, progress: bool = False,
                images=None) -> list:
    """The k patches of X (m, n_H, n_W, n_C) where channel `unit` of `layer` is most active, highest
    first (ties: the earlier image, row, column): each unit position's receptive field, clipped at
    the borders, with its activation (a list of `Patch`). The pixels are cut from `images` when given
    (X before its normalization, say; same m, n_H and n_W), else from X."""
    if int(k) < 1:
        raise LaminaError(f"top_patches: k must be >= 1, got {k}")
    X = np.asarray(X)
    images = X if images is None else np.asarray(images)
    if images.ndim != 4 or images.shape[:3] != X.shape[:3]:
        raise ShapeError(f"top_patches: images must be (m, n_H, n_W, n_C) with X's m, n_H and n_W "
                         f"{X.shape[:3]}, got shape {images.shape}")
    a = unit_activations(model, layer, int(unit), X, batch_size, progress)
    field = receptive_field(model, layer, X.shape[1:3])
    if a.shape[1:] != field.output_hw:
        raise ShapeError(f"top_patches: layer {layer!r} has {a.shape[1:]} positions but its receptive field "
                         f"arithmetic gives {field.output_hw}")
    order = np.argsort(-a.ravel(), kind="stable")[:int(k)]
    patches = []
    for flat in order:
        n, i, j = (int(v) for v in np.unravel_index(flat, a.shape))
        top, left, bottom, right = field.box(i, j)
        patches.append(Patch(n, i, j, float(a[n, i, j]), (top, left, bottom, right),
                             field.window(i, j), images[n, top:bottom, left:right].copy()))
    return patches


def patch_grid(patches, cols: int = 3, min_cell: int = 48, normalize: bool = True) -> np.ndarray:
    """The patches tiled row by row, `cols` per row, as an (H, W, n_C) array in [0, 1]: each sits where its
    window puts it in a cell of the full window size (mid-grey where the window left the image), scaled
    up by an integer factor to at least `min_cell` pixels, 2-pixel white lines between cells. With
    `normalize`, the values are mapped linearly from the patches' [min, max] onto [0, 1]."""
    if not patches:
        raise LaminaError("save_patch_grid: got no patches")
    channels = {p.pixels.shape[-1] for p in patches}
    if len(channels) != 1 or channels.pop() not in (1, 3):
        raise ShapeError(f"save_patch_grid: patches must all have 1 or 3 channels, got shapes "
                         f"{sorted({p.pixels.shape for p in patches})}")
    n_C = patches[0].pixels.shape[-1]
    size = max(max(p.window[2] - p.window[0], p.window[3] - p.window[1]) for p in patches)
    values = np.concatenate([p.pixels.astype(np.float64).ravel() for p in patches])
    low, high = (values.min(), values.max()) if normalize and values.size else (0.0, 1.0)
    span = high - low if high > low else 1.0
    scale = max(1, math.ceil(min_cell / size))
    cell, gap = size * scale, 2
    rows = math.ceil(len(patches) / cols)
    grid = np.ones((rows * cell + (rows - 1) * gap, cols * cell + (cols - 1) * gap, n_C))
    for idx, p in enumerate(patches):
        tile = np.full((size, size, n_C), 0.5)
        r0, c0 = p.box[0] - p.window[0], p.box[1] - p.window[1]
        tile[r0:r0 + p.pixels.shape[0], c0:c0 + p.pixels.shape[1]] = (p.pixels - low) / span
        tile = np.repeat(np.repeat(tile, scale, axis=0), scale, axis=1)
        r, c = divmod(idx, cols)
        grid[r * (cell + gap):r * (cell + gap) + cell, c * (cell + gap):c * (cell + gap) + cell] = tile
    return np.clip(grid, 0.0, 1.0)


def save_patch_grid(patches, path, cols: int = 3, min_cell: int = 48, normalize: bool = True):
    """Write `patch_grid(patches, ...)` (a 3×3 grid for the default k = 9) to image file `path`, atomically."""
    from .images import save_image

    return save_image(path, patch_grid(patches, cols, min_cell, normalize))
