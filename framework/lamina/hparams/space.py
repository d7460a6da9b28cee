"""Search spaces (§2.18): distributions sampled at random on the right scale, zoomed around
the best trials for the next coarse-to-fine round, read from TOML; and how a key of the space
names a setting of a recipe.

A space file holds one table per hyper-parameter:

    [lr]
    distribution = "log_uniform"            # α = 10^r, r ~ U[log10 low, log10 high]
    low = 1e-4
    high = 1e-1

    [beta1]
    distribution = "one_minus_log_uniform"  # β = 1 − 10^r, r ~ U[log10(1 − high), log10(1 − low)]
    low = 0.9
    high = 0.999

    [batch_size]
    distribution = "choice"
    values = [32, 64, 128]

    [model.layers.0.n_out]                  # TOML nests this; any table holding
    distribution = "int_uniform"            # `distribution` is one hyper-parameter
    low = 32
    high = 512

Keys name recipe settings (see `setting_path`): a dotted path into the recipe's tables
(`optimizer.lr`, `training.batch_size`, `model.layers.0.n_out`: list items by index from 0),
or a bare name, which is a [training] setting (`batch_size`, `epochs`) or a hyper-parameter of
the recipe's optimizer, schedule or regularization (`lr`, `beta1`, `decay_rate`, `lambd`).
"""
from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError, close_matches
from ..files import read_toml

#: the fraction of the old range (in the sampling scale) added on each side of the best
#: trials' values when zooming, so that the next round also looks just beyond them
ZOOM_MARGIN = 0.1


# ---- distributions ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Range:
    """A distribution on [low, high] drawn uniformly in a sampling scale u = to_u(x)."""

    low: float
    high: float

    kind = ""
    scale = "linear"             # how to draw the axis of a plot: linear, log or one_minus_log

    @staticmethod
    def to_u(x):
        return x

    @staticmethod
    def from_u(u):
        return u

    def u_range(self) -> tuple[float, float]:
        return tuple(sorted((self.to_u(self.low), self.to_u(self.high))))

    def sample(self, rng: np.random.Generator) -> float:
        value = float(self.from_u(rng.uniform(*self.u_range())))
        return min(max(value, self.low), self.high)       # 10**log10(x) may miss x by an ulp

    def zoom(self, best_values) -> "_Range":
        """The part of this range around `best_values` (in the sampling scale), widened by
        ZOOM_MARGIN of this range's width on each side and kept inside this range."""
        lo, hi = self.u_range()
        us = [self.to_u(v) for v in best_values]
        pad = ZOOM_MARGIN * (hi - lo)
        new_lo, new_hi = max(lo, min(us) - pad), min(hi, max(us) + pad)
        low, high = sorted((float(self.from_u(new_lo)), float(self.from_u(new_hi))))
        return type(self)(max(low, self.low), min(high, self.high))

    def to_dict(self) -> dict:
        return {"distribution": self.kind, "low": self.low, "high": self.high}

    def __str__(self) -> str:
        return f"{self.kind} [{self.low:.4g}, {self.high:.4g}]"


class Uniform(_Range):
    """x ~ U[low, high]."""

    kind = "uniform"


class LogUniform(_Range):
    """α = 10^r with r ~ U[log10 low, log10 high] (§2.18: learning rates, L2 strengths)."""

    kind, scale = "log_uniform", "log"

    @staticmethod
    def to_u(x):
        return math.log10(x)

    @staticmethod
    def from_u(u):
        return 10.0 ** u


class OneMinusLogUniform(_Range):
    """β = 1 − 10^r with r ~ U[log10(1 − high), log10(1 − low)] (§2.18: exponentially weighted
    averages, whose β matters more the closer it is to 1)."""

    kind, scale = "one_minus_log_uniform", "one_minus_log"

    @staticmethod
    def to_u(x):
        return math.log10(1.0 - x)

    @staticmethod
    def from_u(u):
        return 1.0 - 10.0 ** u


class IntUniform(_Range):
    """An integer drawn uniformly from low, low + 1, ..., high (both included)."""

    kind = "int_uniform"

    def sample(self, rng: np.random.Generator) -> int:
        return int(rng.integers(self.low, self.high, endpoint=True))

    def zoom(self, best_values) -> "IntUniform":
        zoomed = Uniform(self.low, self.high).zoom(best_values)
        return IntUniform(math.floor(zoomed.low), math.ceil(zoomed.high))

    def __str__(self) -> str:
        return f"{self.kind} [{self.low}, {self.high}]"


@dataclass(frozen=True)
class Choice:
    """One of `values`, each as likely."""

    values: tuple

    kind, scale = "choice", "categorical"

    def sample(self, rng: np.random.Generator):
        return self.values[int(rng.integers(len(self.values)))]

    def zoom(self, best_values) -> "Choice":
        """The values the best trials used, in their original order."""
        return Choice(tuple(v for v in self.values if v in best_values))

    def to_dict(self) -> dict:
        return {"distribution": self.kind, "values": list(self.values)}

    def __str__(self) -> str:
        return f"choice {list(self.values)}"


DISTRIBUTIONS = {cls.kind: cls for cls in (Uniform, LogUniform, OneMinusLogUniform, IntUniform, Choice)}


def _number(where: str, name: str, value, integer: bool = False):
    wanted = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, wanted) or not math.isfinite(value):
        raise ConfigError(f"{where}: {name} must be {'an integer' if integer else 'a number'}, got {value!r}")
    return value


def distribution_from_dict(raw, where: str):
    """A distribution from its table, e.g. {distribution = "log_uniform", low = 1e-4, high = 0.1}."""
    if not isinstance(raw, dict) or "distribution" not in raw:
        raise ConfigError(f"{where}: expected a table with a 'distribution' "
                          f"(one of {', '.join(DISTRIBUTIONS)}), got {raw!r}")
    kind = raw["distribution"]
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"{where}: unknown distribution {kind!r}.{close_matches(str(kind), DISTRIBUTIONS)} "
                          f"Known: {', '.join(DISTRIBUTIONS)}")
    keys = ("values",) if kind == "choice" else ("low", "high")
    for key in raw:
        if key != "distribution" and key not in keys:
            raise ConfigError(f"{where}: {kind} takes {' and '.join(keys)}, not {key!r}.{close_matches(key, keys)}")
    for key in keys:
        if key not in raw:
            raise ConfigError(f"{where}: {kind} needs {' and '.join(keys)}; {key!r} is missing")
    if kind == "choice":
        values = raw["values"]
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: choice values must be a non-empty list, got {values!r}")
        for value in values:
            if isinstance(value, (dict, list)):
                raise ConfigError(f"{where}: choice values must be numbers, strings or booleans, got {value!r}")
        if len(set(values)) != len(values):
            raise ConfigError(f"{where}: choice values must be distinct, got {values!r}")
        return Choice(tuple(values))
    integer = kind == "int_uniform"
    low, high = (_number(where, key, raw[key], integer) for key in keys)
    if not low < high:
        raise ConfigError(f"{where}: low must be less than high, got low = {low!r}, high = {high!r}")
    if kind == "log_uniform" and low <= 0:
        raise ConfigError(f"{where}: log_uniform samples 10^r, so low must be positive, got {low!r}")
    if kind == "one_minus_log_uniform" and not (0 <= low and high < 1):
        raise ConfigError(f"{where}: one_minus_log_uniform samples 1 − 10^r, so 0 ≤ low < high < 1, "
                          f"got low = {low!r}, high = {high!r}")
    return DISTRIBUTIONS[kind](low, high)


# ---- spaces -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SearchSpace:
    """Named distributions, in order; the names are recipe settings (see `setting_path`)."""

    dims: dict

    def sample(self, seed: int, round_: int, index: int) -> dict:
        """The configuration of trial `index` of round `round_`: a function of (seed, round, index)
        alone, so the same seed gives the same trials in any order and on any machine."""
        rng = np.random.default_rng([seed, round_, index])
        return {name: dist.sample(rng) for name, dist in self.dims.items()}

    def zoom(self, best: list[dict]) -> "SearchSpace":
        """Coarse to fine: each range narrowed to the values of the `best` configurations."""
        return SearchSpace({name: dist.zoom([params[name] for params in best])
                            for name, dist in self.dims.items()})

    def to_dict(self) -> dict:
        return {name: dist.to_dict() for name, dist in self.dims.items()}

    @classmethod
    def from_dict(cls, raw: dict, source: str = "<dict>") -> "SearchSpace":
        """Parse a space; nested tables without a `distribution` are dotted paths, so the TOML
        header [model.layers.0.n_out] names the setting "model.layers.0.n_out"."""
        dims: dict = {}

        def walk(table: dict, prefix: str) -> None:
            for key, value in table.items():
                name = f"{prefix}{key}"
                if isinstance(value, dict) and "distribution" not in value:
                    walk(value, f"{name}.")
                else:
                    dims[name] = distribution_from_dict(value, f"search space {source}: [{name}]")

        walk(raw, "")
        if not dims:
            raise ConfigError(f"search space {source}: no hyper-parameters; add tables such as\n"
                              f'[lr]\ndistribution = "log_uniform"\nlow = 1e-4\nhigh = 1e-1')
        return cls(dims)

    def __str__(self) -> str:
        return "\n".join(f"  {name:<20} {dist}" for name, dist in self.dims.items())


def load_space(path) -> SearchSpace:
    """The search space in a TOML file."""
    return SearchSpace.from_dict(read_toml(path, "search space"), str(path))


# ---- naming recipe settings -----------------------------------------------------------------------
#: where a bare name is looked up, and the registry kind of each section's component
BARE_NAME_SECTIONS = {"training": None, "optimizer": "optimizers", "schedule": "schedules",
                      "regularization": "regularizers"}


def _keywords(factory) -> set[str]:
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return set()
    return {p.name for p in parameters if p.name not in ("self", "params")
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _settable(config: dict, section: str) -> set[str]:
    """The bare names that address `section`: its keys, and its component's keyword arguments."""
    table = config.get(section)
    if not isinstance(table, dict):
        return set()
    kind = BARE_NAME_SECTIONS[section]
    if kind is None:
        return set(table)
    from ..registry import get

    return (set(table) | _keywords(get(kind, table["name"]))) - {"name"}


def setting_path(config: dict, key: str) -> tuple:
    """Where in a recipe's data (`Recipe.to_dict()`) the hyper-parameter `key` goes.

    A dotted key is a path from a top-level table: `optimizer.lr`, `model.layers.0.n_out` (the
    first layer's n_out; list items by index from 0). Every step but the last must exist; the
    last may be a new key of a table (e.g. `optimizer.beta1` where the recipe relies on the
    default). A bare key is a [training] setting or a keyword of the [optimizer], [schedule] or
    [regularization] component, whichever has it (an error if several do).
    """
    if "." not in key:
        sections = [s for s in BARE_NAME_SECTIONS if key in _settable(config, s)]
        if len(sections) > 1:
            raise ConfigError(f"hyper-parameter {key!r} is ambiguous: it is a setting of "
                              f"{' and '.join(f'[{s}]' for s in sections)}; write "
                              f"{' or '.join(f'{s}.{key}' for s in sections)}")
        if not sections:
            known = sorted(set().union(*(_settable(config, s) for s in BARE_NAME_SECTIONS)))
            raise ConfigError(f"hyper-parameter {key!r} is not a setting of this recipe.{close_matches(key, known)} "
                              f"Bare names: {', '.join(known)}; or a dotted path such as model.layers.0.n_out")
        return (sections[0], key)
    parts = key.split(".")
    tables = [name for name, value in config.items() if isinstance(value, dict)]
    if parts[0] not in tables:
        raise ConfigError(f"hyper-parameter {key!r}: the recipe has no [{parts[0]}] table."
                          f"{close_matches(parts[0], tables)} Its tables: {', '.join(tables)}")
    node, path = config, []
    for depth, part in enumerate(parts):
        here = ".".join(parts[:depth]) or "the recipe"
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"hyper-parameter {key!r}: {here} is a list of {len(node)}; "
                                  f"{part!r} is not one of its indices 0..{len(node) - 1}")
            path.append(int(part))
            node = node[int(part)]
        elif isinstance(node, dict):
            if part not in node and not last:
                raise ConfigError(f"hyper-parameter {key!r}: {here} has no {part!r}."
                                  f"{close_matches(part, node)} It has: {', '.join(node)}")
            path.append(part)
            node = node.get(part)
        else:
            raise ConfigError(f"hyper-parameter {key!r}: {here} is {node!r}, not a table or a list")
    if isinstance(node, (dict, list)):
        raise ConfigError(f"hyper-parameter {key!r} names a whole {'table' if isinstance(node, dict) else 'list'}, "
                          f"not a single setting")
    return tuple(path)


def _get(config: dict, path: tuple):
    node = config
    for step in path[:-1]:
        node = node[step]
    return node.get(path[-1]) if isinstance(node, dict) else node[path[-1]]


def apply_params(recipe, params: dict):
    """A copy of `recipe` (a lamina Recipe) with each hyper-parameter set to its value in `params`."""
    from ..recipes import Recipe

    config = copy.deepcopy(recipe.to_dict())
    for key, value in params.items():
        path = setting_path(config, key)
        node = config
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value
    return Recipe.from_dict(config, recipe.source)


def check_space(space: SearchSpace, recipe) -> None:
    """Fail before any trial runs if a key names no setting of `recipe`, an integer setting
    would get fractional values, or the sampled recipe does not load."""
    config = recipe.to_dict()
    for key, dist in space.dims.items():
        current = _get(config, setting_path(config, key))
        integer = isinstance(current, int) and not isinstance(current, bool)
        if integer and isinstance(dist, (Uniform, LogUniform, OneMinusLogUniform)):
            raise ConfigError(f"hyper-parameter {key!r} is an integer setting (the recipe has {current!r}); "
                              f"sample it with int_uniform or choice, not {dist.kind}")
    apply_params(recipe, space.sample(0, 0, 0))


def default_space(recipe) -> SearchSpace:
    """What matters most first (§2.18): the learning rate log-uniform over a decade either side of
    the recipe's, the optimizer's momentum β (beta1 or beta) one-minus-log-uniform over
    [0.9, 0.999], and the mini-batch size among powers of two from a quarter to four times the recipe's."""
    from ..registry import get

    factory = get("optimizers", recipe.optimizer["name"])
    signature = inspect.signature(factory).parameters
    lr = recipe.optimizer.get("lr", signature["lr"].default if "lr" in signature else None)
    dims: dict = {}
    if isinstance(lr, (int, float)) and lr > 0:
        dims["lr"] = LogUniform(lr / 10, lr * 10)
    beta = next((name for name in ("beta1", "beta") if name in signature), None)
    if beta is not None:
        dims[beta] = OneMinusLogUniform(0.9, 0.999)
    batch_size = recipe.training["batch_size"]
    if isinstance(batch_size, int):
        powers = {2 ** k for k in range(31) if batch_size / 4 <= 2 ** k <= batch_size * 4}
        dims["batch_size"] = Choice(tuple(sorted(powers | {batch_size})))
    if not dims:
        raise ConfigError(f"recipe {recipe.name!r}: no default search space (its optimizer has no lr and its "
                          f"batch size is {batch_size!r}); give one with --space")
    return SearchSpace(dims)
