"""Classic CNN architectures (§4.7–4.8) as `Sequential` models on NHWC images (`lamina.models`).

Every builder takes `input_shape=(H, W, C)` and `num_classes` and returns a `Sequential` whose
`summary(input_shape)` lists each layer's output shape. For 224×224×3 inputs and 1000 classes the
trainable parameter counts (`num_parameters(trainable_only=True)`, i.e. without BatchNorm's running
averages, which torchvision keeps as buffers) equal torchvision's: VGG-16 138,357,544, AlexNet
61,100,840, ResNet-18 11,689,512, ResNet-34 21,797,672, ResNet-50 25,557,032. Layouts follow
torchvision's; Flatten flattens in NHWC order (torchvision flattens NCHW), which changes the
order of the first Dense layer's rows but not the architecture. The final layer gives logits (no
softmax): pair it with a softmax cross-entropy loss.
"""
from __future__ import annotations

from .nn import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, MaxPool2D, ReLU,
                 ResidualBlock, Sequential, Tanh)

__all__ = ["lenet5", "alexnet", "vgg16", "resnet18", "resnet34", "resnet50"]


def _flat(layers_before, input_shape) -> int:
    """The number of features after Flatten, from the shapes of the layers before it."""
    shape = (None,) + tuple(input_shape)
    for layer in layers_before:
        shape = layer.output_shape(shape)
    n = 1
    for d in shape[1:]:
        n *= int(d)
    return n


def lenet5(input_shape=(32, 32, 1), num_classes: int = 10, variant: str = "original") -> Sequential:
    """LeNet-5 (LeCun et al. 1998, §4.7): CONV(6, 5×5) → POOL → CONV(16, 5×5) → POOL → FC(120) → FC(84)
    → FC(num_classes). 61,706 parameters for 32×32×1 and 10 classes.

    variant="original": tanh after each convolution and each hidden FC layer and 2×2 average
    pooling (the seed's description; the paper's partial C3 connection table and trainable pooling
    coefficients are not reproduced: the second convolution sees all 6 channels). variant="modern":
    ReLU and 2×2 max pooling.
    """
    if variant not in ("original", "modern"):
        raise ValueError(f"lenet5: variant must be 'original' or 'modern', got {variant!r}")
    act, Pool = ("tanh", AvgPool2D) if variant == "original" else ("relu", MaxPool2D)
    C = int(input_shape[2])
    trunk = [Conv2D(C, 6, 5, activation=act), Pool(2), Conv2D(6, 16, 5, activation=act), Pool(2), Flatten()]
    n = _flat(trunk, input_shape)
    return Sequential(*trunk, Dense(n, 120, activation=act), Dense(120, 84, activation=act),
                      Dense(84, num_classes), name="lenet5")


def alexnet(input_shape=(224, 224, 3), num_classes: int = 1000) -> Sequential:
    """AlexNet in torchvision's layout (single-tower, no local response normalization):
    CONV(64, 11×11, s4, p2) → MAXPOOL(3, s2) → CONV(192, 5×5, p2) → MAXPOOL(3, s2) → CONV(384, 3×3, p1)
    → CONV(256, 3×3, p1) → CONV(256, 3×3, p1) → MAXPOOL(3, s2) → Flatten → Dropout → FC(4096) → Dropout
    → FC(4096) → FC(num_classes), ReLU after every convolution and hidden FC layer. torchvision's
    adaptive average pooling to 6×6 is left out: for a 224×224 input the last pooling already gives
    6×6×256 (other sizes give other Flatten widths). 61,100,840 parameters at 224×224×3 / 1000.
    """
    C = int(input_shape[2])
    trunk = [Conv2D(C, 64, 11, stride=4, padding=2, activation="relu"), MaxPool2D(3, stride=2),
             Conv2D(64, 192, 5, padding=2, activation="relu"), MaxPool2D(3, stride=2),
             Conv2D(192, 384, 3, padding=1, activation="relu"), Conv2D(384, 256, 3, padding=1, activation="relu"),
             Conv2D(256, 256, 3, padding=1, activation="relu"), MaxPool2D(3, stride=2), Flatten()]
    n = _flat(trunk, input_shape)
    return Sequential(*trunk, Dropout(0.5), Dense(n, 4096, activation="relu"), Dropout(0.5),
                      Dense(4096, 4096, activation="relu"), Dense(4096, num_classes), name="alexnet")


def vgg16(input_shape=(224, 224, 3), num_classes: int = 1000) -> Sequential:
    """VGG-16 (configuration D, §4.7): 13 3×3 "same" convolutions with ReLU in blocks of 64, 64 | 128,
    128 | 256 ×3 | 512 ×3 | 512 ×3 channels, each block followed by 2×2 max pooling with stride 2, then
    FC(4096) → Dropout → FC(4096) → Dropout → FC(num_classes) (torchvision's classifier; its adaptive
    pooling to 7×7 is the identity at 224×224 and left out). 138,357,544 parameters at 224×224×3 / 1000.
    """
    layers, C = [], int(input_shape[2])
    for width, repeats in ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)):
        for _ in range(repeats):
            layers.append(Conv2D(C, width, 3, padding=1, activation="relu"))
            C = width
        layers.append(MaxPool2D(2, stride=2))
    layers.append(Flatten())
    n = _flat(layers, input_shape)
    return Sequential(*layers, Dense(n, 4096, activation="relu"), Dropout(0.5),
                      Dense(4096, 4096, activation="relu"), Dropout(0.5), Dense(4096, num_classes), name="vgg16")


def _resnet(name, kind, blocks, input_shape, num_classes) -> Sequential:
    C = int(input_shape[2])
    layers = [Conv2D(C, 64, 7, stride=2, padding=3, use_bias=False), BatchNorm(64), ReLU(),
              MaxPool2D(3, stride=2, padding=1)]
    n_in, expansion = 64, 1 if kind == "basic" else 4
    for stage, (width, repeats) in enumerate(zip((64, 128, 256, 512), blocks)):
        for i in range(repeats):
            stride = 2 if stage > 0 and i == 0 else 1
            layers.append(ResidualBlock(n_in, width, stride=stride, kind=kind))
            n_in = width * expansion
    return Sequential(*layers, GlobalAvgPool2D(), Dense(n_in, num_classes), name=name)


def resnet18(input_shape=(224, 224, 3), num_classes: int = 1000) -> Sequential:
    """ResNet-18 (He et al. 2015, §4.8) in torchvision's layout: CONV(64, 7×7, s2, p3) → BN → ReLU →
    MAXPOOL(3, s2, p1) → basic residual blocks [2, 2, 2, 2] of 64, 128, 256, 512 channels (the first
    block of each later stage has stride 2 and a projection shortcut) → global average pooling →
    FC(num_classes). 11,689,512 trainable parameters at 224×224×3 / 1000."""
    return _resnet("resnet18", "basic", (2, 2, 2, 2), input_shape, num_classes)


def resnet34(input_shape=(224, 224, 3), num_classes: int = 1000) -> Sequential:
    """ResNet-34: as resnet18 with basic blocks [3, 4, 6, 3]. 21,797,672 trainable parameters."""
    return _resnet("resnet34", "basic", (3, 4, 6, 3), input_shape, num_classes)


def resnet50(input_shape=(224, 224, 3), num_classes: int = 1000) -> Sequential:
    """ResNet-50: as resnet18 with bottleneck blocks (1×1, 3×3, 1×1, expansion 4; the stride on the 3×3
    convolution as torchvision's v1.5) [3, 4, 6, 3]. 25,557,032 trainable parameters."""
    return _resnet("resnet50", "bottleneck", (3, 4, 6, 3), input_shape, num_classes)
