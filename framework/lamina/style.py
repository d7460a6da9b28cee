"""Neural style transfer (§4.22; Gatys et al., "A neural algorithm of artistic style").

J(G) = α·J_content(C, G) + β·J_style(S, G), minimised over the pixels of the generated image G
with Adam. Every cost is written with Lamina ops, so autograd gives ∂J/∂G through the feature
network. `FeatureExtractor` returns the activations of chosen layers of a `Sequential` CNN (the
unit visualisation of `lamina.visualize` uses it too); `feature_network` builds the default
network: the convolutional trunk of VGG-16 (or AlexNet) with seeded He-initialised random
filters, cut after the deepest layer used, unless trained weights are loaded (`load_weights`).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .autograd import no_grad
from .errors import CheckpointError, LaminaError, ShapeError, TrainingDiverged, close_matches
from .tensor import Parameter, Tensor

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---- picking layers of a Sequential -----------------------------------------------------------------
def _layers(model, where: str) -> list:
    try:
        return [model[i] for i in range(len(model))]
    except TypeError:
        raise LaminaError(f"{where}: the model must be a Sequential (indexable layers), got "
                          f"{type(model).__name__}") from None


def layer_index(model, ref, where: str = "FeatureExtractor") -> int:
    """The index in Sequential `model` of layer `ref`: an int (negative counts from the end), a
    string of digits, or a layer's name (`model[i].name`, e.g. "conv3_1" or "conv2d_0")."""
    layers = _layers(model, where)
    if isinstance(ref, str) and ref.strip().lstrip("-").isdigit():
        ref = int(ref)
    if isinstance(ref, (int, np.integer)) and not isinstance(ref, bool):
        if not -len(layers) <= ref < len(layers):
            raise LaminaError(f"{where}: layer index {ref} is out of range: the model has {len(layers)} layers "
                              f"(0 to {len(layers) - 1})")
        return int(ref) % len(layers)
    names = [layer.name for layer in layers]
    if ref in names:
        return names.index(ref)
    raise LaminaError(f"{where}: no layer named {ref!r}; the layers are {', '.join(names)}."
                      f"{close_matches(str(ref), names)}")


class FeatureExtractor:
    """Runs a Sequential CNN on x and returns {ref: activation} for the layers `refs` (indices or
    names, see `layer_index`); layers after the deepest one asked for are not run."""

    def __init__(self, model, refs: Sequence):
        if isinstance(refs, (str, int)):
            refs = [refs]
        if not refs:
            raise LaminaError("FeatureExtractor: refs must name at least one layer, got none")
        self.model = model
        self.refs = list(refs)
        self.indices = {ref: layer_index(model, ref) for ref in self.refs}
        self.depth = max(self.indices.values()) + 1
        self._layers = _layers(model, "FeatureExtractor")[:self.depth]

    def __call__(self, x) -> dict:
        if not isinstance(x, Tensor):
            x = Tensor(np.asarray(x))
        wanted: dict[int, list] = {}
        for ref, i in self.indices.items():
            wanted.setdefault(i, []).append(ref)
        out = {}
        for i, layer in enumerate(self._layers):
            x = layer(x)
            for ref in wanted.get(i, ()):
                out[ref] = x
        return out


# ---- the costs ------------------------------------------------------------------------------------
def _like(x, ref: Tensor) -> Tensor:
    """`x` as a tensor on `ref`'s backend and dtype (targets may be NumPy arrays)."""
    if isinstance(x, Tensor):
        return x
    return Tensor(np.asarray(x), dtype=ref.dtype, backend=ref.backend)


def _check_activations(where: str, a_X, a_G, names=("a_C", "a_G")) -> tuple:
    for name, a in zip(names, (a_X, a_G)):
        if a.ndim != 4:
            raise ShapeError(f"{where}: {name} must be NHWC activations (m, n_H, n_W, n_C), got shape {a.shape}")
    if tuple(a_X.shape) != tuple(a_G.shape):
        raise ShapeError(f"{where}: {names[0]} and {names[1]} must have the same shape, got {tuple(a_X.shape)} "
                         f"and {tuple(a_G.shape)} (resize both images to the same n_H × n_W)")
    return tuple(a_G.shape)


def content_cost(a_C, a_G) -> Tensor:
    """J_content = 1/(4·n_H·n_W·n_C) · Σ (a^(C) − a^(G))², summed over every entry (and image)."""
    a_G = a_G if isinstance(a_G, Tensor) else Tensor(np.asarray(a_G))
    a_C = _like(a_C, a_G)
    _, n_H, n_W, n_C = _check_activations("content_cost", a_C, a_G)
    return ((a_C - a_G) ** 2).sum() * (1.0 / (4.0 * n_H * n_W * n_C))


def gram_matrix(A) -> Tensor:
    """The style matrix of each image: G_kk' = Σ_i Σ_j a_ijk · a_ijk', (m, n_H, n_W, n_C) -> (m, n_C, n_C)."""
    A = A if isinstance(A, Tensor) else Tensor(np.asarray(A))
    if A.ndim != 4:
        raise ShapeError(f"gram_matrix: A must be NHWC activations (m, n_H, n_W, n_C), got shape {A.shape}")
    m, n_H, n_W, n_C = A.shape
    a = A.reshape(m, n_H * n_W, n_C)
    return a.transpose(0, 2, 1) @ a


def layer_style_cost(a_S, a_G) -> Tensor:
    """J_style^[l] = 1/(2·n_H·n_W·n_C)² · ‖G^(S) − G^(G)‖²_F, summed over the images."""
    a_G = a_G if isinstance(a_G, Tensor) else Tensor(np.asarray(a_G))
    a_S = _like(a_S, a_G)
    _, n_H, n_W, n_C = _check_activations("layer_style_cost", a_S, a_G, ("a_S", "a_G"))
    return ((gram_matrix(a_S) - gram_matrix(a_G)) ** 2).sum() * (1.0 / (2.0 * n_H * n_W * n_C) ** 2)


def style_cost(activations_S, activations_G, weights=None) -> Tensor:
    """J_style = Σ_l λ^[l] · J_style^[l](S, G) over the style layers; λ^[l] = 1/L each by default.

    `activations_S`/`activations_G` are sequences in the same layer order, or mappings with the same
    keys; `weights` a sequence (same order) or a mapping by key.
    """
    if isinstance(activations_G, Mapping):
        if not isinstance(activations_S, Mapping) or set(activations_S) != set(activations_G):
            raise LaminaError(f"style_cost: activations_S and activations_G must have the same layers, got "
                              f"{list(activations_S)} and {list(activations_G)}")
        keys = list(activations_G)
        pairs = [(activations_S[k], activations_G[k]) for k in keys]
        if isinstance(weights, Mapping):
            missing = [k for k in keys if k not in weights]
            if missing:
                raise LaminaError(f"style_cost: weights give no λ for layers {missing}")
            weights = [weights[k] for k in keys]
    else:
        if len(activations_S) != len(activations_G):
            raise LaminaError(f"style_cost: activations_S has {len(activations_S)} layers but activations_G "
                              f"has {len(activations_G)}")
        pairs = list(zip(activations_S, activations_G))
    if not pairs:
        raise LaminaError("style_cost: expected at least one style layer, got none")
    if weights is None:
        weights = [1.0 / len(pairs)] * len(pairs)
    weights = [float(w) for w in weights]
    if len(weights) != len(pairs):
        raise LaminaError(f"style_cost: expected {len(pairs)} weights λ^[l] (one per layer), got {len(weights)}")
    total = None
    for (a_S, a_G), lambd in zip(pairs, weights):
        term = layer_style_cost(a_S, a_G) * lambd
        total = term if total is None else total + term
    return total


def total_cost(J_content, J_style, alpha: float = 10.0, beta: float = 40.0) -> Tensor:
    """J(G) = α·J_content(C, G) + β·J_style(S, G)."""
    return J_content * float(alpha) + J_style * float(beta)


# ---- the feature networks ----------------------------------------------------------------------------
def _vgg16():
    from .models import vgg16

    # 32×32 is the smallest input VGG-16's five poolings accept; the size only shapes the classifier,
    # which is cut off, not the convolutions
    model = vgg16(input_shape=(32, 32, 3), num_classes=1)
    block, conv = 1, 0
    for layer in model:
        if type(layer).__name__ == "Conv2D":
            conv += 1
            layer.name = f"conv{block}_{conv}"
        elif type(layer).__name__ == "MaxPool2D":
            layer.name = f"pool{block}"
            block, conv = block + 1, 0
        else:
            break
    return model


def _alexnet():
    from .models import alexnet

    model = alexnet(input_shape=(67, 67, 3), num_classes=1)
    counts = {"Conv2D": 0, "MaxPool2D": 0}
    for layer in model:
        kind = type(layer).__name__
        if kind not in counts:
            break
        counts[kind] += 1
        layer.name = f"{'conv' if kind == 'Conv2D' else 'pool'}{counts[kind]}"
    return model


#: name -> builder of the full model whose convolutional trunk serves as the feature network
FEATURE_NETWORKS = {"vgg16": _vgg16, "alexnet": _alexnet}
DEFAULT_LAYERS = {"vgg16": ("conv3_2", ("conv1_1", "conv2_1", "conv3_1")),
                  "alexnet": ("conv4", ("conv1", "conv2", "conv3"))}


def feature_network(name: str = "vgg16", upto=None, seed: int = 0):
    """The convolutional trunk of model `name` ("vgg16" or "alexnet", as `lamina.models` builds them)
    as a Sequential cut after layer `upto` (a name such as "conv3_3", an index, or a list of them:
    cut after the deepest; None keeps the whole trunk), its filters He-initialised after
    `manual_seed(seed)`. Layers are named conv<block>_<i> and pool<block> (VGG-16) or conv<i> and
    pool<i> (AlexNet); parameters keep the full model's names ("0.W", "0.b", "1.W", ...), so a
    state_dict of the full model loads into it (`load_weights`)."""
    from .backend import manual_seed
    from .nn import Sequential

    if name not in FEATURE_NETWORKS:
        raise LaminaError(f"feature_network: unknown model {name!r}; choose one of {', '.join(FEATURE_NETWORKS)}"
                          f".{close_matches(name, FEATURE_NETWORKS)}")
    manual_seed(seed)
    full = FEATURE_NETWORKS[name]()
    layers = [full[i] for i in range(len(full))]
    trunk_end = next(i for i, layer in enumerate(layers) if type(layer).__name__ not in ("Conv2D", "MaxPool2D"))
    trunk = Sequential(*layers[:trunk_end], name=f"{name}_features")
    if upto is None:
        end = trunk_end
    else:
        refs = [upto] if isinstance(upto, (str, int)) else list(upto)
        end = max(layer_index(trunk, ref, f"feature_network({name!r})") for ref in refs) + 1
    return Sequential(*layers[:end], name=f"{name}_features")


def read_weights(path) -> dict[str, np.ndarray]:
    """The arrays of safetensors file `path` (never unpickled); a Lamina checkpoint's "model/" prefix
    is dropped, so `checkpoint.safetensors` from `lamina train` works as well as a bare state_dict."""
    from safetensors import SafetensorError
    from safetensors.numpy import load as st_load

    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.safetensors"
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    try:
        arrays = st_load(path.read_bytes())
    except (SafetensorError, ValueError) as err:
        raise CheckpointError(f"{path} is not a valid safetensors file: {err}") from err
    if any(k.startswith("model/") for k in arrays):
        arrays = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    return arrays


def load_weights(network, path) -> None:
    """Load the safetensors weights at `path` into Sequential `network`, whose parameters are named
    "<layer index>.<W|b>". Every parameter of `network` must be present with its shape; arrays of
    layers past the network's end (the classifier of a full model's state_dict) are ignored."""
    arrays = read_weights(path)
    n = len(network)

    def index(key):
        head = key.split(".", 1)[0]
        return int(head) if head.isdigit() else -1

    beyond = [k for k in arrays if index(k) >= n]
    state = {k: v for k, v in arrays.items() if k not in beyond}
    own = dict(network.named_parameters())
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{path}: the weights do not fit {network.name} (parameters {', '.join(own)}): "
                              f"missing {missing or 'nothing'}, unexpected {unexpected or 'nothing'}")
    network.load_state_dict(state)


# ---- the optimisation ----------------------------------------------------------------------------
@dataclass
class StyleTransferResult:
    """The generated image G (float32 (1, n_H, n_W, n_C) in [0, 1]) and, for step 0 (the initial G)
    to `steps` (the returned G), the total, content and style costs."""

    image: np.ndarray
    costs: list = field(default_factory=list)
    content_costs: list = field(default_factory=list)
    style_costs: list = field(default_factory=list)


def _image(where: str, name: str, x) -> np.ndarray:
    x = np.asarray(x.numpy() if isinstance(x, Tensor) else x, dtype=np.float64)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[0] != 1:
        raise ShapeError(f"{where}: {name} must be one NHWC image (1, n_H, n_W, n_C) or (n_H, n_W, n_C), "
                         f"got shape {x.shape}")
    return x


class frozen:
    """`with frozen(network):` inference use of a network: eval mode and no parameter gradients
    (so backpropagation reaches the input only), both restored afterwards."""

    def __init__(self, network):
        self.network = network

    def __enter__(self):
        self.training = getattr(self.network, "training", False)
        self.flags = [(p, p.requires_grad) for p in self.network.parameters()]
        self.network.eval()
        for p, _ in self.flags:
            p.requires_grad = False
        return self.network

    def __exit__(self, *exc):
        for p, flag in self.flags:
            p.requires_grad = flag
        self.network.train(self.training)


def style_transfer(content, style, network, content_layer, style_layers, alpha: float = 10.0,
                   beta: float = 1000.0, steps: int = 100, lr: float = 0.05, init_noise: float = 0.6,
                   seed: int = 0, progress: bool = False, style_weights=None, mean=None,
                   std=None) -> StyleTransferResult:
    """Generate G with C's content and S's style: minimise J(G) = α·J_content + β·J_style over G's pixels.

    G starts as init_noise·U(0, 1) + (1 − init_noise)·C (noise seeded by `seed`); each of `steps` Adam
    steps (learning rate `lr`) updates G and clips it to [0, 1]. `content` and `style` are images with
    values in [0, 1] of the same shape; `network` a Sequential CNN run on (G − mean)/std (mean 0 and
    std 1 by default; `IMAGENET_MEAN`/`IMAGENET_STD` for ImageNet-trained weights); `content_layer`
    and `style_layers` name or index its layers; `style_weights` are the λ^[l] (default 1/L each).
    The network is left as it was (its parameters get no gradient). The defaults (β/α = 100, lr 0.05)
    suit the default random-filter `feature_network`, whose Gram matrices are small; trained
    networks usually want another β/α (the seed's example is α = 10, β = 40).
    """
    from tqdm.auto import tqdm

    from .optim import Adam

    where = "style_transfer"
    C, S = _image(where, "content", content), _image(where, "style", style)
    if C.shape != S.shape:
        raise ShapeError(f"{where}: content and style must have the same shape, got {C.shape} and {S.shape} "
                         f"(load the style image with size=content.shape[1:3])")
    if isinstance(style_layers, (str, int)):
        style_layers = [style_layers]
    style_layers = list(style_layers)
    if not style_layers:
        raise LaminaError(f"{where}: style_layers must name at least one layer, got none")
    if int(steps) < 0:
        raise LaminaError(f"{where}: steps must be >= 0, got {steps}")
    if not 0.0 <= float(init_noise) <= 1.0:
        raise LaminaError(f"{where}: init_noise must lie in [0, 1], got {init_noise}")
    for label, value in (("alpha", alpha), ("beta", beta)):
        if not float(value) >= 0.0:
            raise LaminaError(f"{where}: {label} must be >= 0, got {value}")
    extractor = FeatureExtractor(network, [content_layer] + [s for s in style_layers if s != content_layer])
    n_C = C.shape[3]
    shift = np.zeros(n_C) if mean is None else np.broadcast_to(np.asarray(mean, dtype=np.float64), (n_C,))
    scale = np.ones(n_C) if std is None else np.broadcast_to(np.asarray(std, dtype=np.float64), (n_C,))

    def features(x: Tensor) -> dict:
        return extractor((x - Tensor(shift, dtype=x.dtype, backend=x.backend))
                         * Tensor(1.0 / scale, dtype=x.dtype, backend=x.backend))

    def costs(feats) -> tuple:
        J_content = content_cost(a_C, feats[content_layer])
        J_style = style_cost(a_S, [feats[layer] for layer in style_layers], style_weights)
        return total_cost(J_content, J_style, alpha, beta), J_content, J_style

    result = StyleTransferResult(image=np.empty(0, np.float32))

    def record(J, J_content, J_style, step):
        values = [float(J.item()), float(J_content.item()), float(J_style.item())]
        if not np.all(np.isfinite(values)):
            raise TrainingDiverged(f"{where}: the cost became {values[0]} at step {step}; lower lr (got {lr})")
        for curve, value in zip((result.costs, result.content_costs, result.style_costs), values):
            curve.append(value)

    rng = np.random.default_rng(seed)
    G = Parameter(np.clip(init_noise * rng.uniform(0.0, 1.0, C.shape) + (1.0 - init_noise) * C, 0.0, 1.0))
    with frozen(network):
        with no_grad():
            a_C = features(Tensor(C, dtype=G.dtype))[content_layer]
            feats_S = features(Tensor(S, dtype=G.dtype))
            a_S = [feats_S[layer] for layer in style_layers]
        optimizer = Adam([G], lr=lr)
        bar = tqdm(total=int(steps), unit="step", file=sys.stderr, dynamic_ncols=True, leave=False,
                   disable=not progress, desc="style transfer")
        try:
            for step in range(int(steps)):
                J, J_content, J_style = costs(features(G))
                record(J, J_content, J_style, step)
                optimizer.zero_grad()
                J.backward()
                optimizer.step()
                with no_grad():
                    G.data = G.clip(0.0, 1.0).data
                bar.update(1)
                bar.set_postfix(J=f"{result.costs[-1]:.4g}", refresh=False)
        finally:
            bar.close()
        with no_grad():
            record(*costs(features(G)), int(steps))
    result.image = G.numpy().astype(np.float32)
    return result
