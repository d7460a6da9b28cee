"""Recipes: a model, its data, loss, optimizer and training settings, all by registered name,
in TOML (data only: a recipe never runs code). Built-in recipes are TOML files beside this."""
from __future__ import annotations

import copy
import inspect
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ..errors import ConfigError, LaminaError, close_matches
from ..files import read_toml
from ..registry import get, names, singular

SECTIONS = {"name": str, "description": str, "data": dict, "model": dict, "loss": dict, "optimizer": dict,
            "schedule": dict, "regularization": dict, "training": dict, "compare": dict}
REQUIRED = ("data", "model", "loss", "optimizer")
TRAINING_DEFAULTS = {"epochs": 10, "batch_size": 64, "seed": 0, "metrics": ["accuracy"], "clip_norm": None,
                     "clip_value": None, "early_stopping": None, "optimizing": None, "satisficing": []}
#: batch_size may also name a mode (§2.11): all m examples at once, or one at a time
BATCH_MODES = ("full", "stochastic")


@dataclass
class Recipe:
    name: str
    data: dict
    model: dict
    loss: dict
    optimizer: dict
    training: dict = field(default_factory=dict)
    schedule: dict | None = None
    regularization: dict | None = None
    compare: dict | None = None
    description: str = ""
    source: str = "<dict>"

    # ---- loading ----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict, source: str = "<dict>") -> "Recipe":
        where = f"recipe {source}"
        for key, value in raw.items():
            if key not in SECTIONS:
                raise ConfigError(f"{where}: unknown section {key!r}.{close_matches(key, SECTIONS)} "
                                  f"Sections: {', '.join(SECTIONS)}")
            if not isinstance(value, SECTIONS[key]):
                raise ConfigError(f"{where}: {key!r} must be a {SECTIONS[key].__name__}, got {value!r}")
        for key in REQUIRED:
            if key not in raw:
                raise ConfigError(f"{where}: missing the [{key}] section")
        for section, key in (("data", "dataset"), ("loss", "name"), ("optimizer", "name"),
                             ("schedule", "name"), ("regularization", "name")):
            if section in raw and key not in raw[section]:
                raise ConfigError(f"{where}: [{section}] needs {key!r}")
        _check_model(raw["model"], where)
        training = dict(TRAINING_DEFAULTS, **raw.get("training", {}))
        for key in training:
            if key not in TRAINING_DEFAULTS:
                raise ConfigError(f"{where}: unknown [training] setting {key!r}."
                                  f"{close_matches(key, TRAINING_DEFAULTS)} Known: {', '.join(TRAINING_DEFAULTS)}")
        batch_size = training["batch_size"]
        if not (batch_size in BATCH_MODES or (isinstance(batch_size, int) and batch_size > 0)):
            raise ConfigError(f"{where}: [training] batch_size must be a positive integer or one of "
                              f"{', '.join(map(repr, BATCH_MODES))}, got {batch_size!r}")
        compare = raw.get("compare")
        if compare is not None:
            _check_compare(compare, where)
        raw = copy.deepcopy(raw)
        return cls(name=raw.get("name", Path(source).stem), data=raw["data"], model=raw["model"],
                   loss=raw["loss"], optimizer=raw["optimizer"], training=training,
                   schedule=raw.get("schedule"), regularization=raw.get("regularization"),
                   compare=raw.get("compare"),
                   description=raw.get("description", ""), source=source)

    @classmethod
    def from_file(cls, path) -> "Recipe":
        return cls.from_dict(read_toml(path, "recipe"), str(path))

    def to_dict(self) -> dict:
        """The recipe as TOML-ready data (unset optional settings left out)."""
        out = {"name": self.name, "description": self.description, "data": self.data, "model": self.model,
               "loss": self.loss, "optimizer": self.optimizer}
        for section in ("schedule", "regularization", "compare"):
            if getattr(self, section) is not None:
                out[section] = getattr(self, section)
        out["training"] = {k: v for k, v in self.training.items() if v is not None and v != []}
        return out

    def variants(self) -> dict[str, "Recipe"]:
        """For a [compare] recipe: one plain recipe per compared optimizer (or model), by a readable label:
        its `label`, else the optimizer's name (the model's builder or first layer type)."""
        out = {}
        for section, tables in (self.compare or {}).items():
            for options in tables:
                variant = copy.deepcopy(self)
                variant.compare = None
                setattr(variant, section, {k: v for k, v in options.items() if k != "label"})
                out[options.get("label") or _default_label(section, options)] = variant
        return out

    def with_overrides(self, **overrides) -> "Recipe":
        """A copy with training settings (epochs, batch_size, seed) or `lr` replaced where not None."""
        recipe = copy.deepcopy(self)
        for key, value in overrides.items():
            if value is None:
                continue
            if key == "lr":
                recipe.optimizer["lr"] = value
                for options in (recipe.compare or {}).get("optimizer", []):
                    options["lr"] = value
            else:
                recipe.training[key] = value
        return recipe

    # ---- building -------------------------------------------------------------------------
    def load_data(self):
        """The dataset, with a training-dev split carved out of train if `train_dev` is set
        (a count or a fraction of the training set, §3.8), and the training split's `augment`
        built from the `augment` list of registered augmentations (§4.12) when given."""
        from ..augment import from_config
        from ..data import with_train_dev

        options = {k: v for k, v in self.data.items() if k not in ("dataset", "normalize", "train_dev", "augment")}
        dataset = _construct("datasets", self.data["dataset"], options, f"recipe {self.name!r} [data]")
        if self.data.get("train_dev") is not None:
            dataset = with_train_dev(dataset, self.data["train_dev"], seed=self.training["seed"])
        if self.data.get("augment"):
            dataset.train.augment = from_config(self.data["augment"], f"recipe {self.name!r} [data] augment")
        return dataset

    @property
    def normalize(self) -> bool:
        """Whether inputs are standardized with the training set's statistics (§2.6)."""
        return bool(self.data.get("normalize", False))

    def batch_size(self, m: int) -> int:
        """The mini-batch size for m training examples: "full" = m, "stochastic" = 1 (§2.11)."""
        size = self.training["batch_size"]
        return m if size == "full" else 1 if size == "stochastic" else int(size)

    def build_model(self, input_shape, num_classes: int | None = None):
        """The model for examples of `input_shape` (an int for flat features, or e.g. (8, 8, 1)
        for NHWC images, (T, n_x) for sequences). Each layer whose constructor takes `n_in` (or
        `input_size`, a recurrent layer's n_x) gets the last axis of the previous layer's output shape;
        each that takes `V` (a vocabulary size: embeddings, language models) gets `num_classes`, the
        dataset's V, when the recipe does not set it. A setting that is itself a layer table, such as
        `{ type = "bidirectional", layer = { type = "lstm", hidden_size = 32 } }`, is built first for
        the same input. A [model] with `builder` instead of `layers` calls that `lamina.models` builder
        with input_shape and the table's other settings."""
        from ..nn import Sequential

        if "builder" in self.model:
            return self._build_from_builder(input_shape)
        shape = (None,) + (tuple(input_shape) if isinstance(input_shape, (tuple, list)) else (int(input_shape),))
        layers = []
        specs = self.model["layers"]
        for i, spec in enumerate(specs):
            where = f"recipe {self.name!r} layer {i}"
            options = _layer_options(spec, shape, num_classes, where)
            factory = get("layers", spec["type"])
            following = get("layers", specs[i + 1]["type"]) if i + 1 < len(specs) else None
            if getattr(following, "absorbs_bias", False) and "use_bias" in _parameters(factory) \
                    and "use_bias" not in options:
                options["use_bias"] = False     # batch norm's β does the bias's job (§2.19)
            layer = _construct("layers", spec["type"], options, where)
            shape = tuple(layer.output_shape(shape))
            layers.append(layer)
        return Sequential(*layers)

    def _build_from_builder(self, input_shape):
        name = self.model["builder"]
        where = f"recipe {self.name!r} [model]"
        if not isinstance(input_shape, (tuple, list)) or len(input_shape) != 3:
            raise ConfigError(f"{where}: model builder {name!r} needs images (n_H, n_W, n_C), but the data gives "
                              f"examples of shape {input_shape!r}; set images = true in [data]")
        options = {k: v for k, v in self.model.items() if k != "builder"}
        builders = model_builders()
        if name not in builders:
            raise ConfigError(f"{where}: unknown model builder {name!r}.{close_matches(name, builders)} "
                              f"Known builders: {', '.join(builders)}")
        try:
            return builders[name](input_shape=tuple(input_shape), **options)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: cannot build model {name!r} with {options}: {err}") from err

    def build_loss(self):
        options = {k: v for k, v in self.loss.items() if k != "name"}
        return _construct("losses", self.loss["name"], options, f"recipe {self.name!r} [loss]")

    def build_optimizer(self, params):
        options = {k: v for k, v in self.optimizer.items() if k != "name"}
        factory = get("optimizers", self.optimizer["name"])
        try:
            return factory(params, **options)
        except TypeError as err:
            raise ConfigError(f"recipe {self.name!r} [optimizer]: {err}") from err

    def build_schedule(self):
        """The learning-rate schedule `(epoch, lr0) -> lr`, or None."""
        if self.schedule is None:
            return None
        options = {k: v for k, v in self.schedule.items() if k != "name"}
        return _construct("schedules", self.schedule["name"], options, f"recipe {self.name!r} [schedule]")

    def build_regularizer(self):
        """The cost term `(model, m) -> tensor` (e.g. L2), or None."""
        if self.regularization is None:
            return None
        options = {k: v for k, v in self.regularization.items() if k != "name"}
        return _construct("regularizers", self.regularization["name"], options,
                          f"recipe {self.name!r} [regularization]")

    def build_clip(self):
        """A function clipping the gradients in place (by value, then by global norm), or None."""
        value, norm = self.training["clip_value"], self.training["clip_norm"]
        if value is None and norm is None:
            return None
        from .. import clipping

        def clip(params):
            if value is not None:
                clipping.clip_grad_value(params, value)
            if norm is not None:
                clipping.clip_grad_norm(params, norm)

        return clip

    def build_early_stopping(self):
        options = self.training["early_stopping"]
        if options is None:
            return None
        from ..early_stopping import EarlyStopping

        if not isinstance(options, dict):
            raise ConfigError(f"recipe {self.name!r}: [training] early_stopping must be a table such as "
                              f"{{ metric = \"accuracy\", patience = 5 }}, got {options!r}")
        try:
            return EarlyStopping(**options)
        except TypeError as err:
            raise ConfigError(f"recipe {self.name!r}: [training] early_stopping: {err}") from err

    def build_metrics(self) -> dict:
        """{name: metric}; an entry is a registered name, or a table {name = ..., <options>}."""
        metrics = {}
        for entry in self.training["metrics"]:
            name, options = (entry, {}) if isinstance(entry, str) else \
                (entry.get("name"), {k: v for k, v in entry.items() if k != "name"})
            if not isinstance(name, str):
                raise ConfigError(f"recipe {self.name!r}: each [training] metrics entry is a name or a table "
                                  f"with a 'name', got {entry!r}")
            metrics[name] = _construct("metrics", name, options, f"recipe {self.name!r} metrics")
        return metrics

    def objectives(self):
        """(optimizing metric name, satisficing specs) of §3.3: the single number to maximize
        (default: the first metric) and the metrics that only need to be good enough."""
        from ..metrics import Satisficing

        first = self.training["metrics"][0] if self.training["metrics"] else None
        default = first if isinstance(first, str) else (first or {}).get("name")
        return (self.training["optimizing"] or default,
                [Satisficing.parse(spec) for spec in self.training["satisficing"]])


def model_builders() -> dict:
    """{name: builder} of the registered model builders (kind "models": lamina.models' lenet5, alexnet, vgg16,
    resnet18, ..., and any a plugin adds), which a recipe names as [model] builder = "lenet5"."""
    from .. import registry

    return {name: registry.get("models", name) for name in registry.names("models")}


def _check_model(model: dict, where: str) -> None:
    """[model] has either `layers` (a non-empty list of tables with a 'type') or a known `builder`."""
    if ("layers" in model) == ("builder" in model):
        raise ConfigError(f"{where}: [model] needs either 'layers' (a list of layer tables) or 'builder' (a "
                          f"registered model builder such as \"lenet5\"), got "
                          f"{'both' if 'layers' in model else 'neither'}")
    if "builder" in model:      # (the name is looked up when the model is built: a plugin's may register later)
        if not isinstance(model["builder"], str):
            raise ConfigError(f"{where}: [model] builder must be the name of a model builder, got {model['builder']!r}")
        return
    if not isinstance(model["layers"], list) or not model["layers"]:
        raise ConfigError(f"{where}: [model] layers must be a non-empty list of tables")
    for i, spec in enumerate(model["layers"]):
        if not isinstance(spec, dict) or "type" not in spec:
            raise ConfigError(f"{where}: layer {i} must be a table with a 'type', got {spec!r}")


COMPARED = ("optimizer", "model")


def _check_compare(compare: dict, where: str) -> None:
    """[compare] has one key, optimizer or model, naming a list of at least two optimizer tables (each with
    a 'name') or model tables (each a [model] table); any table may add a 'label' for the plot's legend."""
    usage = (f"{where}: [compare] takes one key, optimizer = a list of at least two optimizer tables each with a "
             f"'name', or model = a list of at least two [model] tables (layers = [...]), got {compare!r}")
    if len(compare) != 1 or next(iter(compare)) not in COMPARED:
        raise ConfigError(usage)
    section, variants = next(iter(compare.items()))
    if not isinstance(variants, list) or len(variants) < 2 or not all(isinstance(v, dict) for v in variants):
        raise ConfigError(usage)
    labels = []
    for i, variant in enumerate(variants):
        if section == "optimizer" and "name" not in variant:
            raise ConfigError(usage)
        if section == "model":
            _check_model({k: v for k, v in variant.items() if k != "label"}, f"{where} [compare] model {i}")
        labels.append(variant.get("label") or _default_label(section, variant))
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{where}: [compare] {section} variants need distinct labels (one sub-folder and one "
                          f"curve each), got {labels}; give each table a 'label'")


def _default_label(section: str, table: dict) -> str:
    if section == "optimizer":
        return table["name"]
    if "builder" in table:
        return table["builder"]
    return table["layers"][0]["type"]


def _layer_options(spec: dict, shape: tuple, num_classes: int | None, where: str) -> dict:
    """A layer table's constructor arguments for inputs of `shape`: n_in or input_size (a recurrent layer's
    n_x) = the last axis, and V = num_classes, where the constructor takes them and the table does not set
    them; a setting that is itself a layer table (Bidirectional's or TimeDistributed's `layer`) is built
    for the same input."""
    options = {k: v for k, v in spec.items() if k != "type"}
    parameters = _parameters(get("layers", spec["type"]))
    for size in ("n_in", "input_size"):
        if size in parameters and size not in options:
            options[size] = shape[-1]
    if "V" in parameters and "V" not in options and num_classes is not None:
        options["V"] = int(num_classes)
    for key, value in options.items():
        if isinstance(value, dict) and "type" in value:
            inner = f"{where} {key}"
            options[key] = _construct("layers", value["type"], _layer_options(value, shape, num_classes, inner), inner)
    return options


def _parameters(factory) -> set[str]:
    try:
        return set(inspect.signature(factory).parameters)
    except (TypeError, ValueError):
        return set()


def _construct(kind: str, name: str, options: dict, where: str):
    factory = get(kind, name)
    try:
        return factory(**options)
    except TypeError as err:
        raise ConfigError(f"{where}: cannot build {singular(kind)} {name!r} with {options}: {err}") from err


def builtin_recipes() -> dict[str, Recipe]:
    """The recipes shipped as TOML files in this package."""
    found = {}
    for entry in resources.files(__name__).iterdir():
        if entry.name.endswith(".toml"):
            recipe = Recipe.from_dict(tomllib.loads(entry.read_text()), f"lamina:{entry.name}")
            found[recipe.name] = recipe
    return found


def load_recipe(name_or_path: str) -> Recipe:
    """A registered recipe by name, or a recipe TOML file by path."""
    if name_or_path.endswith(".toml") or Path(name_or_path).is_file():
        return Recipe.from_file(name_or_path)
    try:
        return get("recipes", name_or_path)
    except LaminaError:
        raise ConfigError(f"unknown recipe {name_or_path!r}.{close_matches(name_or_path, names('recipes'))} "
                          f"Registered recipes: {', '.join(names('recipes'))}; or give a path to a .toml file") from None
