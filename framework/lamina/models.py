"""Classic CNN architectures (§4.7–4.10) on NHWC images (`lamina.models`): `Sequential` models, and
GoogLeNet as a `GoogLeNet` layer (its side branches make it more than a chain).

Every builder takes `input_shape=(H, W, C)` and `num_classes` and returns a model whose
`summary(input_shape)` lists each layer's output shape. For 224×224×3 inputs and 1000 classes the
trainable parameter counts (`num_parameters(trainable_only=True)`, i.e. without BatchNorm's running
averages, which torchvision keeps as buffers) equal torchvision's: VGG-16 138,357,544, AlexNet
61,100,840, ResNet-18 11,689,512, ResNet-34 21,797,672, ResNet-50 25,557,032, GoogLeNet 6,624,904
(13,004,888 with its side branches). Layouts follow
torchvision's; Flatten flattens in NHWC order (torchvision flattens NCHW), which changes the
order of the first Dense layer's rows but not the architecture. The final layer gives logits (no
softmax): pair it with a softmax cross-entropy loss.
"""
from __future__ import annotations

from typing import NamedTuple

from .errors import LaminaError, ShapeError
from .losses import Loss, SoftmaxCrossEntropy
from .nn import (AvgPool2D, BatchNorm, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool2D, InceptionModule, Layer,
                 LocalResponseNorm, MaxPool2D, ReLU, ResidualBlock, Sequential, Tanh)
from .nn.inception import ConvUnit, InceptionAux, summary_row, summary_view

#: the builders (recipes name them as [model] builder = "..."); the classes below are public too
__all__ = ["lenet5", "alexnet", "vgg16", "resnet18", "resnet34", "resnet50", "googlenet"]


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


def alexnet(input_shape=(224, 224, 3), num_classes: int = 1000, lrn: bool = False) -> Sequential:
    """AlexNet in torchvision's layout (single-tower; local response normalization only with lrn=True):
    CONV(64, 11×11, s4, p2) → MAXPOOL(3, s2) → CONV(192, 5×5, p2) → MAXPOOL(3, s2) → CONV(384, 3×3, p1)
    → CONV(256, 3×3, p1) → CONV(256, 3×3, p1) → MAXPOOL(3, s2) → Flatten → Dropout → FC(4096) → Dropout
    → FC(4096) → FC(num_classes), ReLU after every convolution and hidden FC layer. torchvision's
    adaptive average pooling to 6×6 is left out: for a 224×224 input the last pooling already gives
    6×6×256 (other sizes give other Flatten widths). 61,100,840 parameters at 224×224×3 / 1000.

    lrn=True adds the paper's local response normalization (Krizhevsky et al. 2012, section 3.3) after
    the ReLU of the first two convolutions, before their pooling: n = 5, k = 2, β = 0.75 and the paper's
    α = 1e-4 applied to the window sum, i.e. LocalResponseNorm(alpha=5e-4), whose α is divided by n.
    It has no parameters, so the count is unchanged.
    """
    C = int(input_shape[2])
    def norm():
        return [LocalResponseNorm(5, alpha=5 * 1e-4, beta=0.75, k=2.0)] if lrn else []

    trunk = [Conv2D(C, 64, 11, stride=4, padding=2, activation="relu"), *norm(), MaxPool2D(3, stride=2),
             Conv2D(64, 192, 5, padding=2, activation="relu"), *norm(), MaxPool2D(3, stride=2),
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


# ---- GoogLeNet (§4.10) ---------------------------------------------------------------------------------
#: Table 1 of Szegedy et al. 2014 (torchvision's too): n_1x1, n_3x3_reduce, n_3x3, n_5x5_reduce, n_5x5, pool_proj
INCEPTION_WIDTHS = {
    "inception3a": (64, 96, 128, 16, 32, 32), "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64), "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64), "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128), "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}
#: the side branches and the module whose output each reads
AUX_TAPS = {"aux1": "inception4a", "aux2": "inception4d"}


class GoogLeNetOutputs(NamedTuple):
    """What GoogLeNet returns in training mode with side branches (torchvision's order)."""

    logits: object
    aux_logits2: object
    aux_logits1: object


class AuxiliaryLoss(Loss):
    """J = L(logits) + aux_weight·(L(aux_logits1) + L(aux_logits2)) for a `GoogLeNetOutputs` (training with
    side branches; aux_weight = 0.3 as Szegedy et al.), and plain J = L(outputs) for a tensor (eval mode,
    or a model without side branches). `loss` is a Loss or a registered loss name (default softmax
    cross-entropy on logits). Pass it to `lamina.training.fit` as the loss of a GoogLeNet with
    aux_logits=True; recipes name it [loss] name = "auxiliary"."""

    name, expects = "auxiliary", "logits"

    def __init__(self, loss: Loss | str | None = None, aux_weight: float = 0.3):
        if not aux_weight >= 0:
            raise LaminaError(f"AuxiliaryLoss: aux_weight must be ≥ 0, got {aux_weight!r}")
        if isinstance(loss, str):
            from .registry import get

            loss = get("losses", loss)()
        self.loss = loss if loss is not None else SoftmaxCrossEntropy()
        self.aux_weight = float(aux_weight)

    def __call__(self, outputs, targets):
        if not isinstance(outputs, GoogLeNetOutputs):
            return self.loss(outputs, targets)
        return self.loss(outputs.logits, targets) + self.aux_weight * (
            self.loss(outputs.aux_logits1, targets) + self.loss(outputs.aux_logits2, targets))

    def __repr__(self) -> str:
        return f"AuxiliaryLoss({self.loss!r}, aux_weight={self.aux_weight})"


class GoogLeNet(Layer):
    """GoogLeNet / Inception v1 (Szegedy et al. 2014, "Going deeper with convolutions"; §4.10) on NHWC images:

        stem → inception 3a, 3b → max pool → 4a … 4e → max pool → 5a, 5b → global average pool → dropout → FC

    with side branches (`InceptionAux`) on the outputs of 4a and 4d. In training mode with `aux_logits`,
    calling it returns `GoogLeNetOutputs(logits, aux_logits2, aux_logits1)` (train with `AuxiliaryLoss`);
    in eval mode, or without side branches, only the logits, as torchvision's. Built by `googlenet()`.
    Max pools with stride 2 use "same" padding, which is torchvision's ceil_mode=True pooling wherever the
    pooled map has an even size (every map at 224×224 and at any multiple of 32).
    """

    def __init__(self, input_shape=(224, 224, 3), num_classes: int = 1000, aux_logits: bool = True,
                 variant: str = "torchvision", name: str | None = None):
        super().__init__(name or "googlenet")
        if variant not in ("torchvision", "paper"):
            raise LaminaError(f"googlenet: variant must be 'torchvision' or 'paper', got {variant!r}")
        if len(input_shape) != 3:
            raise LaminaError(f"googlenet: input_shape must be (n_H, n_W, n_C), got {tuple(input_shape)!r}")
        self.variant, self.aux_logits = variant, bool(aux_logits)
        self.input_shape, self.num_classes = tuple(int(n) for n in input_shape), int(num_classes)
        paper = variant == "paper"
        bn = not paper
        self.trunk = []

        def add(key, layer):
            setattr(self, key, layer)
            self.trunk.append(key)

        add("conv1", ConvUnit(self.input_shape[2], 64, 7, stride=2, padding=3, batch_norm=bn))
        add("maxpool1", MaxPool2D(3, stride=2, padding="same"))
        if paper:                       # Caffe's BVLC GoogLeNet constants (the paper gives none)
            add("lrn1", LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0))
        add("conv2", ConvUnit(64, 64, 1, batch_norm=bn))
        add("conv3", ConvUnit(64, 192, 3, padding=1, batch_norm=bn))
        if paper:
            add("lrn2", LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0))
        add("maxpool2", MaxPool2D(3, stride=2, padding="same"))
        n_in = 192
        for key, widths in INCEPTION_WIDTHS.items():
            if key == "inception4a":
                add("maxpool3", MaxPool2D(3, stride=2, padding="same"))
            if key == "inception5a":    # the paper pools 3×3/2 here, torchvision 2×2/2
                add("maxpool4", MaxPool2D(3, stride=2, padding="same") if paper else MaxPool2D(2, stride=2,
                                                                                                padding="same"))
            add(key, InceptionModule(n_in, *widths, batch_norm=bn, f_5x5=5 if paper else 3))
            n_in = sum(widths[i] for i in (0, 2, 4, 5))
        add("avgpool", GlobalAvgPool2D())
        add("dropout", Dropout(keep_prob=0.6 if paper else 0.8))
        add("fc", Dense(n_in, self.num_classes))
        if self.aux_logits:
            shapes = self._trunk_shapes((None,) + self.input_shape)
            for aux, tap in AUX_TAPS.items():
                tapped = shapes[tap]
                try:
                    setattr(self, aux, InceptionAux(tapped[3], self.num_classes, in_hw=tapped[1:3], variant=variant))
                except ShapeError as err:
                    raise ShapeError(f"googlenet: the paper's side branch {aux} pools 5×5/3 over {tap}'s output, "
                                     f"which is {tapped[1]}×{tapped[2]} for input_shape {self.input_shape}; it needs "
                                     f"at least 5×5 (inputs of 65×65 or more), or pass aux_logits=False") from err

    def _trunk_shapes(self, input_shape) -> dict:
        shapes = {}
        for key in self.trunk:
            input_shape = getattr(self, key).output_shape(input_shape)
            shapes[key] = input_shape
        return shapes

    def forward(self, x):
        side = self.training and self.aux_logits
        outputs = {}
        for key in self.trunk:
            x = getattr(self, key)(x)
            if side and key in AUX_TAPS.values():
                outputs[key] = x
        if not side:
            return x
        return GoogLeNetOutputs(x, self.aux2(outputs[AUX_TAPS["aux2"]]), self.aux1(outputs[AUX_TAPS["aux1"]]))

    def output_shape(self, input_shape):
        """The main logits' shape (what eval mode returns)."""
        return self._trunk_shapes(input_shape)[self.trunk[-1]]

    def summary(self, input_shape=None, print_fn=print) -> str:
        """Layer.summary's table: the trunk's rows, then each side branch's, shaped from the module it reads."""
        rows = {key: getattr(self, key) for key in self.trunk}
        if self.aux_logits:
            shapes = self._trunk_shapes((None,) + tuple(input_shape)) if input_shape is not None else {}
            for aux, tap in AUX_TAPS.items():
                rows[aux] = summary_row(getattr(self, aux), f"{tap}'s output, training only", shapes.get(tap))
        return summary_view(self.name, rows).summary(input_shape, print_fn=print_fn)

    def describe(self) -> str:
        return f"{self.variant}, {self.num_classes} classes{', side branches' if self.aux_logits else ''}"


def googlenet(input_shape=(224, 224, 3), num_classes: int = 1000, aux_logits: bool = True,
              variant: str = "torchvision") -> GoogLeNet:
    """GoogLeNet (Inception v1, §4.10) as a `GoogLeNet` layer; see its docstring for the outputs.

    variant="torchvision" reproduces torchvision.models.googlenet: every convolution is conv (no bias) +
    BN(ε = 0.001) + ReLU, the "5×5" branch of each Inception module uses a 3×3 filter (torchvision's known
    quirk, kept for its weights), a 2×2/2 max pool before 5a, dropout 0.2 (keep_prob 0.8) before the FC,
    side branches with adaptive average pooling to 4×4. Trainable parameters at 1000 classes: 6,624,904
    without side branches, 13,004,888 with them (torchvision's counts; BN's running averages, buffers in
    torchvision, are the rest of `num_parameters()`).

    variant="paper" follows Szegedy et al. 2014 (Table 1, figure 3): convolutions with biases and ReLU, no
    BN, 5×5 filters in the wide branch, local response normalization after the first max pool and after the
    3×3 convolution (n = 5, α = 1e-4, β = 0.75, k = 1, BVLC GoogLeNet's), 3×3/2 max pools, global average
    pooling (the paper's 7×7/1 at 224×224), dropout 40% (keep_prob 0.6), side branches of 5×5/3 average
    pooling → 1×1 conv 128 → FC 1024 → dropout 70% → FC num_classes (which need the 4a/4d maps, ⌈n/16⌉
    wide, to be at least 5×5: inputs of 65×65 or more). torchvision's transform_input is left out (no parameters).
    """
    return GoogLeNet(input_shape, num_classes, aux_logits=aux_logits, variant=variant)
