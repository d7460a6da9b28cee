"""Transfer learning (§3.9, §4.11): start from a pre-trained model's weights, swap the head, freeze the
trunk, and train the head fast on the trunk's outputs computed once and cached on disk; with more
data, fine-tune the last few layers too (`replace_head`, `unfreeze_last`).

    import lamina.transfer as tr
    report = tr.load_matching(model, "runs/pretrained/checkpoint")   # the head's shapes differ: skipped
    tr.freeze(model, range(len(model) - 1))                          # retrain only the last layer
    trunk, head = tr.split_model(model, head_layers=1)
    features = tr.cached_features(trunk, X_train, "cache/")          # run the trunk once
    fit(head, loss, optim.Adam(head.parameters()), Split(features, y_train), ...)

Training `head` on the cached features is the same computation as training the whole model
with its trunk frozen, as long as the trunk computes the same in train and eval mode: the
features are computed in eval mode (dropout off, batch-norm running averages), which is how
a frozen trunk should run. With enough new data, unfreeze and fine-tune the whole model.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from . import checkpoint
from .errors import CheckpointError, LaminaError
from .files import atomic_write


@dataclass
class TransferReport:
    """What `load_matching` did: the parameters it loaded, the checkpoint arrays it skipped
    (name -> why), and the model's parameters the checkpoint did not set (left as initialized)."""

    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} parameters: {', '.join(self.loaded) or 'none'}"]
        lines += [f"skipped {name}: {why}" for name, why in self.skipped.items()]
        if self.missing:
            lines.append(f"left as initialized: {', '.join(self.missing)}")
        return "\n".join(lines)


def load_matching(model, source, rename: Callable[[str], str | None] | None = None) -> TransferReport:
    """Copy into `model` every array of `source` whose name and shape match one of its parameters.

    `source` is a checkpoint directory (`lamina.checkpoint` format; its model arrays are used)
    or a {name: array} state dict. `rename` maps a source name to the model's name for it (or
    None to skip it), for when the trunk sits under another prefix. Raises CheckpointError if
    nothing matches, which is almost always the wrong checkpoint or a missing `rename`.
    """
    if isinstance(source, dict):
        state = dict(source)
    else:
        arrays, _ = checkpoint.read(source)
        prefix = checkpoint.MODEL_PREFIX
        state = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
    own = dict(model.named_parameters())
    report, matched = TransferReport(), {}
    for source_name, value in state.items():
        name = rename(source_name) if rename is not None else source_name
        value = np.asarray(value)
        if name is None:
            report.skipped[source_name] = "renamed away"
        elif name not in own:
            report.skipped[source_name] = f"the model has no parameter {name!r}"
        elif tuple(value.shape) != own[name].shape:
            report.skipped[source_name] = (f"shape {tuple(value.shape)} in the checkpoint but {own[name].shape} "
                                           f"in the model")
        else:
            matched[name] = value
    if not matched:
        raise CheckpointError(f"{model.name}: no array of the checkpoint matches a parameter of the model by name "
                              f"and shape; checkpoint has {', '.join(sorted(state)) or 'nothing'}, the model "
                              f"{', '.join(own)}")
    model.load_state_dict(matched, strict=False)
    report.loaded = [name for name in own if name in matched]
    report.missing = [name for name in own if name not in matched]
    return report


def _sublayers(model) -> dict[str, object]:
    return dict(model._layers)


def freeze(model, layers: Iterable[int | str]) -> list[str]:
    """Freeze the chosen sub-layers of `model` (frozen parameters get no gradient, so no
    optimizer updates them or keeps state for them). Each entry is a position (negative counts
    from the end, as for a list), a sub-layer's key ("0") or its name ("dense_0"). Returns the
    names of the parameters frozen."""
    children = _sublayers(model)
    keys = list(children)
    by_name = {layer.name: key for key, layer in children.items()}
    chosen = []
    for entry in layers:
        if isinstance(entry, (int, np.integer)) and not isinstance(entry, bool):
            if not -len(keys) <= entry < len(keys):
                raise LaminaError(f"freeze: {model.name!r} has {len(keys)} layers, no layer {entry}")
            chosen.append(keys[entry])
        elif isinstance(entry, str) and (entry in children or entry in by_name):
            chosen.append(entry if entry in children else by_name[entry])
        else:
            raise LaminaError(f"freeze: no layer {entry!r} in {model.name!r}; layers are positions 0..{len(keys) - 1}, "
                              f"keys {', '.join(keys)} or names {', '.join(by_name)}")
    frozen = []
    for key in dict.fromkeys(chosen):
        children[key].freeze()
        frozen += [f"{key}.{name}" for name, _ in children[key].named_parameters()]
    return frozen


def split_model(model, head_layers: int = 1):
    """(trunk, head): two `Sequential`s sharing `model`'s layers, the last `head_layers` of them
    in the head. Training the head trains those layers of `model` too."""
    from .nn import Sequential

    layers = list(_sublayers(model).values())
    if not 1 <= head_layers < len(layers):
        raise LaminaError(f"split_model: head_layers must be between 1 and {len(layers) - 1} for a model of "
                          f"{len(layers)} layers, got {head_layers}")
    return (Sequential(*layers[:-head_layers], name=f"{model.name}_trunk"),
            Sequential(*layers[-head_layers:], name=f"{model.name}_head"))


def _features_out(layers, input_shape) -> int:
    shape = (None,) + tuple(input_shape)
    for layer in layers:
        shape = layer.output_shape(shape)
    if len(shape) != 2 or shape[1] is None:
        raise LaminaError(f"replace_head: the trunk gives outputs of shape {shape}, not (m, features); end it with "
                          f"a Flatten or a global pooling layer, or keep more layers in the head")
    return int(shape[1])


def replace_head(model, num_classes: int, *, head_layers: int = 1, hidden: Iterable[int] = (),
                 activation: str = "relu", input_shape=None, freeze_trunk: bool = True, name: str | None = None):
    """A new model: `model`'s layers except the last `head_layers` (the trunk, shared, not copied),
    then a new head Dense(n, h_1) → … → Dense(h_k, num_classes) giving the logits of a softmax over
    the new classes (§4.11; the softmax lives in the loss: softmax_cross_entropy). n is the trunk's
    output width: from `input_shape` (one example, e.g. (224, 224, 3)) through the trunk's output
    shapes when given, else the `n_in` of the first removed layer. `hidden` widths re-design the
    head (with `activation`); `freeze_trunk` freezes the trunk's parameters."""
    from .nn import Dense, Sequential

    layers = list(_sublayers(model).values())
    if not 1 <= head_layers < len(layers):
        raise LaminaError(f"replace_head: head_layers must be between 1 and {len(layers) - 1} for a model of "
                          f"{len(layers)} layers, got {head_layers}")
    if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) or num_classes < 1:
        raise LaminaError(f"replace_head: num_classes must be a positive integer, got {num_classes!r}")
    trunk, old_head = layers[:-head_layers], layers[-head_layers:]
    if input_shape is not None:
        n = _features_out(trunk, input_shape)
    elif getattr(old_head[0], "n_in", None) is not None:
        n = int(old_head[0].n_in)
    else:
        raise LaminaError(f"replace_head: cannot tell the trunk's output width from {old_head[0].name!r} (it has no "
                          f"n_in); pass input_shape, the shape of one example")
    widths = [n, *(int(h) for h in hidden), int(num_classes)]
    head = [Dense(a, b, activation=activation if i < len(widths) - 2 else None)
            for i, (a, b) in enumerate(zip(widths, widths[1:]))]
    new = Sequential(*trunk, *head, name=name or model.name)
    if freeze_trunk:
        freeze(new, range(len(trunk)))
    return new


def unfreeze_last(model, k: int) -> list[str]:
    """Fine-tune the last `k` layers that have trainable parameters and freeze every other layer
    (§4.11: the more data, the fewer layers frozen; k = 0 freezes everything). Layers without
    parameters (pooling, Flatten, activations) are not counted. Returns the names of the parameters
    left trainable."""
    children = _sublayers(model)
    with_params = [key for key, layer in children.items() if any(True for _ in layer.named_parameters())]
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 0 <= k <= len(with_params):
        raise LaminaError(f"unfreeze_last: k must be an integer between 0 and {len(with_params)} (the layers of "
                          f"{model.name!r} with parameters), got {k!r}")
    trained = set(with_params[len(with_params) - k:])
    for key, layer in children.items():
        if key in trained:
            layer.unfreeze()
        else:
            layer.freeze()
    return [name for name, p in model.named_parameters() if p.requires_grad]


CACHE_FORMAT = "lamina-features-1"


def features_key(trunk, X) -> str:
    """SHA-256 (hex) of what the trunk's outputs depend on: its layers (type and settings),
    every parameter's name, dtype, shape and values, and the inputs' dtype, shape and values."""
    digest = hashlib.sha256(CACHE_FORMAT.encode())
    for layer in _sublayers(trunk).values() or [trunk]:
        digest.update(repr(layer).encode())
    for name, p in trunk.named_parameters():
        value = np.ascontiguousarray(p.numpy())
        digest.update(f"|{name}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(memoryview(value).cast("B"))
    X = np.ascontiguousarray(X)
    digest.update(f"|X|{X.dtype.str}|{X.shape}|".encode())
    digest.update(memoryview(X).cast("B"))
    return digest.hexdigest()


def cached_features(trunk, X, cache_dir, batch_size: int = 1024) -> np.ndarray:
    """The trunk's outputs for X (in eval mode, without gradients), from
    `cache_dir/features-<key>.safetensors` when an earlier call stored them, else computed and
    stored there (written atomically; safetensors, never pickle). The key is `features_key`,
    so changing a weight or an input makes a new entry. An unreadable entry is recomputed."""
    from safetensors import SafetensorError
    from safetensors.numpy import load, save

    from .training import predict

    key = features_key(trunk, X)
    path = Path(cache_dir) / f"features-{key}.safetensors"
    if path.is_file():
        try:
            return load(path.read_bytes())["features"]
        except (SafetensorError, KeyError, ValueError):
            path.unlink()           # a damaged entry: drop it and compute the features again
    features = np.ascontiguousarray(predict(trunk, X, batch_size))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, save({"features": features}, metadata={"format": CACHE_FORMAT, "key": key}))
    return features
