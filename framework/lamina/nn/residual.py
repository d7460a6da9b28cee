"""Residual blocks (§4.8): a[l+2] = g(z[l+2] + a[l]), on NHWC images."""
from __future__ import annotations

from .. import functional as F
from ..errors import ShapeError
from .batchnorm import BatchNorm
from .conv import Conv2D, _check_image
from .layer import Layer


class ResidualBlock(Layer):
    """A ResNet block: the main path's pre-activation z plus the shortcut, then ReLU,
    a = ReLU(z + shortcut(a_prev)) (§4.8).

    kind="basic" skips 2 layers: 3×3 conv (stride `stride`) - BN - ReLU - 3×3 conv - BN; output
    channels n_C. kind="bottleneck" skips 3: 1×1 conv to n_C - BN - ReLU - 3×3 conv (stride
    `stride`) - BN - ReLU - 1×1 conv to expansion·n_C - BN; output channels expansion·n_C (4 by
    default). This is torchvision's layout (ResNet v1.5: the stride is on the 3×3 convolution;
    3×3 convolutions pad 1, so each spatial size becomes ⌊(n + 2 − 3)/s⌋ + 1). Convolutions have
    no bias (BatchNorm's β takes its place).

    The shortcut is the identity when the input already has the output's shape (stride 1 and
    n_in equal to the output channels); otherwise it is the projection W_s: a 1×1 convolution
    with stride `stride` to the output channels, followed by BatchNorm.
    """

    def __init__(self, n_in: int, n_C: int, stride: int = 1, kind: str = "basic", expansion: int = 4,
                 name: str | None = None):
        super().__init__(name)
        if kind not in ("basic", "bottleneck"):
            raise ShapeError(f"ResidualBlock layer {self.name!r}: kind must be 'basic' or 'bottleneck', got {kind!r}")
        if int(n_in) <= 0 or int(n_C) <= 0 or int(stride) <= 0:
            raise ShapeError(f"ResidualBlock layer {self.name!r}: n_in, n_C and stride must be positive, "
                             f"got {n_in}, {n_C} and {stride}")
        self.n_in, self.n_C, self.stride, self.kind = int(n_in), int(n_C), int(stride), kind
        if kind == "basic":
            self.n_out = self.n_C
            self.conv1 = Conv2D(self.n_in, self.n_C, 3, stride=self.stride, padding=1, use_bias=False)
            self.bn1 = BatchNorm(self.n_C)
            self.conv2 = Conv2D(self.n_C, self.n_C, 3, padding=1, use_bias=False)
            self.bn2 = BatchNorm(self.n_C)
        else:
            self.n_out = self.n_C * int(expansion)
            self.conv1 = Conv2D(self.n_in, self.n_C, 1, use_bias=False)
            self.bn1 = BatchNorm(self.n_C)
            self.conv2 = Conv2D(self.n_C, self.n_C, 3, stride=self.stride, padding=1, use_bias=False)
            self.bn2 = BatchNorm(self.n_C)
            self.conv3 = Conv2D(self.n_C, self.n_out, 1, use_bias=False)
            self.bn3 = BatchNorm(self.n_out)
        self.projection = self.stride != 1 or self.n_in != self.n_out
        if self.projection:
            self.shortcut_conv = Conv2D(self.n_in, self.n_out, 1, stride=self.stride, use_bias=False)
            self.shortcut_bn = BatchNorm(self.n_out)

    def forward(self, x):
        _check_image(self, x, self.n_in)
        z = F.relu(self.bn1(self.conv1(x)))
        z = self.bn2(self.conv2(z))
        if self.kind == "bottleneck":
            z = self.bn3(self.conv3(F.relu(z)))
        shortcut = self.shortcut_bn(self.shortcut_conv(x)) if self.projection else x
        return F.relu(z + shortcut)

    def output_shape(self, input_shape):
        if len(input_shape) != 4 or input_shape[3] != self.n_in:
            raise ShapeError(f"ResidualBlock layer {self.name!r}: expected NHWC input (m, n_H, n_W, {self.n_in}), "
                             f"got shape {tuple(input_shape)}")
        conv = self.conv1 if self.kind == "basic" else self.conv2
        _, oh, ow, _ = conv.output_shape(input_shape[:3] + (conv.n_C_prev,))
        return (input_shape[0], oh, ow, self.n_out)

    def describe(self) -> str:
        shortcut = "projection" if self.projection else "identity"
        return f"{self.kind}, {self.n_in} -> {self.n_out}, stride={self.stride}, {shortcut} shortcut"
