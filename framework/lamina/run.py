"""Running a recipe end to end into an output folder: checkpoint, metrics.json, the config
used (config.toml) and a learning-curve PNG."""
from __future__ import annotations

import json
from pathlib import Path

import tomli_w

from . import plotting, training
from .backend import get_backend, manual_seed
from .errors import ConfigError
from .files import atomic_write, read_toml
from .recipes import Recipe

CHECKPOINT_DIR = "checkpoint"


def train_recipe(recipe: Recipe, out_dir, resume: bool = False, progress: bool = True, echo=print,
                 plots: bool = True) -> dict:
    """Train `recipe`, evaluate on train/dev/test and write the results (and, if `plots`, the
    learning curve) into `out_dir`. A [compare] recipe trains one run per variant in a
    sub-folder and plots them together."""
    if recipe.compare:
        return _train_comparison(recipe, Path(out_dir), resume, progress, echo)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / "config.toml"
    config = recipe.to_dict()
    if resume and config_path.is_file():
        previous = read_toml(config_path, "run config")
        for section in ("data", "model", "loss", "optimizer"):
            if previous.get(section) != config.get(section):
                raise ConfigError(f"cannot resume in {out_dir}: its [{section}] differs from this recipe's; "
                                  f"use another --out or the same recipe")
    atomic_write(config_path, tomli_w.dumps(config))

    settings = recipe.training
    manual_seed(settings["seed"])
    data = recipe.load_data()
    normalizer = _fit_normalizer(recipe, data)
    model = recipe.build_model(data.input_shape, data.num_classes)
    vocabulary = getattr(data, "vocabulary", None)
    if vocabulary is not None:      # a language model's vocabulary travels in its checkpoint folder (§5.4)
        from .language_model import save_vocabulary

        save_vocabulary(vocabulary, out_dir / CHECKPOINT_DIR)
    loss_fn, metrics = recipe.build_loss(), recipe.build_metrics()
    optimizer = recipe.build_optimizer(model.parameters())
    backend = get_backend().name
    batch_size = recipe.batch_size(len(data.train))
    echo(f"training {recipe.name!r} on backend {backend!r}: {model.num_parameters():,} parameters, "
         f"{len(data.train)} training examples, {settings['epochs']} epochs of batches of {batch_size}")

    def report(epoch, history):
        dev = history.dev_metrics[-1] if history.dev_metrics else {}
        shown = "  ".join(f"dev {k} {v:.4f}" for k, v in dev.items())
        echo(f"epoch {epoch:>3}/{settings['epochs']}  cost {history.epoch_cost[-1]:.4f}  {shown}")

    early_stopping = recipe.build_early_stopping()
    history = training.fit(model, loss_fn, optimizer, data.train, data.dev, epochs=settings["epochs"],
                           batch_size=batch_size, metrics=metrics, seed=settings["seed"],
                           schedule=recipe.build_schedule(), regularizer=recipe.build_regularizer(),
                           clip=recipe.build_clip(), early_stopping=early_stopping,
                           checkpoint_dir=out_dir / CHECKPOINT_DIR, resume=resume, progress=progress,
                           metadata={"recipe": recipe.name, "backend": backend,
                                     "input_shape": list(data.input_shape), "num_classes": data.num_classes},
                           on_epoch_end=report,
                           extra_arrays=_normalizer_arrays(normalizer))
    if early_stopping is not None and early_stopping.best_epoch and early_stopping.wait >= early_stopping.patience:
        echo(f"early stopping: no better dev {early_stopping.metric} for {early_stopping.patience} epochs; "
             f"restored the weights of epoch {early_stopping.best_epoch}")

    results = {"recipe": recipe.name, "backend": backend, "epochs": len(history.epoch_cost),
               "num_parameters": model.num_parameters()}
    for split_name in ("train", "train_dev", "dev", "test"):
        split = getattr(data, split_name, None)
        if split is not None:
            for key, value in training.evaluate(model, loss_fn, split, metrics).items():
                results[f"{split_name}_{key}"] = value
    if vocabulary is not None:
        from .language_model import unigram_results

        results.update(unigram_results(data))     # the context-free baseline the model has to beat
    if early_stopping is not None:
        results["best_epoch"] = early_stopping.best_epoch
    results["objectives"] = _objectives(recipe, model, data, results, echo)
    results["epoch_cost"] = history.epoch_cost
    results["_history"] = history
    results["history"] = history.to_dict()
    atomic_write(out_dir / "metrics.json", json.dumps({k: v for k, v in results.items() if k != "_history"},
                                                     indent=2))
    if plots and plotting.learning_curve(history, out_dir / "learning_curve.png", title=recipe.name) is None:
        echo("matplotlib is not installed, so no learning_curve.png was drawn (pip install 'lamina[plots]')")
    return results


def _train_comparison(recipe: Recipe, out_dir: Path, resume: bool, progress: bool, echo) -> dict:
    """Train each variant of a [compare] recipe and draw their learning curves on one plot."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(out_dir / "config.toml", tomli_w.dumps(recipe.to_dict()))
    results, histories = {"recipe": recipe.name, "variants": {}}, {}
    for label, variant in recipe.variants().items():
        echo(f"--- {label} ---")
        outcome = train_recipe(variant, out_dir / label, resume=resume, progress=progress, echo=echo)
        histories[label] = outcome.pop("_history")
        results["variants"][label] = {k: v for k, v in outcome.items() if not isinstance(v, (list, dict))}
    atomic_write(out_dir / "metrics.json", json.dumps(results, indent=2))
    if plotting.compare_curves(histories, out_dir / "comparison.png", title=recipe.name) is None:
        echo("matplotlib is not installed, so no comparison.png was drawn (pip install 'lamina[plots]')")
    return results


def _objectives(recipe: Recipe, model, data, results: dict, echo) -> dict | None:
    """The optimizing metric and the satisficing ones (§3.3), on the dev set, with latency measured."""
    from .metrics import evaluate_objectives, measure_latency_ms

    optimizing, satisficing = recipe.objectives()
    split = "dev" if data.dev is not None else "test"
    if optimizing is None or f"{split}_{optimizing}" not in results:
        return None
    values = {k[len(split) + 1:]: v for k, v in results.items() if k.startswith(split + "_")}
    if any(spec.name == "latency_ms" for spec in satisficing):
        X = getattr(data, split).X
        values["latency_ms"] = measure_latency_ms(lambda x: training.predict(model, x), X)
    report = evaluate_objectives(values, optimizing, satisficing)
    parts = [f"{spec}: {report['satisficing'][spec.name]['value']:.4g} "
             f"({'ok' if report['satisficing'][spec.name]['ok'] else 'NOT MET'})" for spec in satisficing]
    echo(f"{split} {optimizing} {report['optimizing']['value']:.4f} (optimizing)"
         + ("; satisficing " + ", ".join(parts) if parts else ""))
    return report


NORMALIZER_PREFIX = "normalizer/"


def _fit_normalizer(recipe: Recipe, data):
    """Fit the input standardization on the training split and apply it to every split (§2.6)."""
    if not recipe.normalize:
        return None
    from .preprocessing import Standardizer

    normalizer = Standardizer().fit(data.train.X)
    for split in (data.train, data.train_dev, data.dev, data.test):
        if split is not None:
            split.X = normalizer.transform(split.X)
    return normalizer


def _normalizer_arrays(normalizer) -> dict:
    if normalizer is None:
        return {}
    return {NORMALIZER_PREFIX + k: v for k, v in normalizer.state_dict().items()}


class TrainedModel:
    """A finished run loaded back: its recipe, model and input normalization, ready to predict."""

    def __init__(self, run_dir):
        from . import checkpoint

        run_dir = Path(run_dir)
        config_path = run_dir / "config.toml"
        if not config_path.is_file():
            raise ConfigError(f"{run_dir} is not a lamina run folder: it has no config.toml")
        self.recipe = Recipe.from_dict(read_toml(config_path, "run config"), str(config_path))
        _, meta = checkpoint.read(run_dir / CHECKPOINT_DIR)
        self.input_shape = tuple(meta["metadata"]["input_shape"])
        self.model = self.recipe.build_model(self.input_shape, meta["metadata"].get("num_classes"))
        checkpoint.load(run_dir / CHECKPOINT_DIR, self.model)
        extra = checkpoint.extra_arrays(run_dir / CHECKPOINT_DIR)
        state = {k[len(NORMALIZER_PREFIX):]: v for k, v in extra.items() if k.startswith(NORMALIZER_PREFIX)}
        self.normalizer = None
        if state:
            from .preprocessing import Standardizer

            self.normalizer = Standardizer.from_state_dict(state)

    def predict(self, X):
        """The model's outputs for raw inputs X (normalized exactly as in training); class
        probabilities (softmax of the logits) when the recipe's loss works on logits."""
        import numpy as np

        from .functional import softmax

        X = np.asarray(X, dtype=np.float64)
        if X.ndim >= 1 and X[:1].size == int(np.prod(self.input_shape)):
            X = X.reshape((len(X),) + self.input_shape)      # e.g. flat CSV rows of an image model
        if self.normalizer is not None:
            X = self.normalizer.transform(X)
        outputs = training.predict(self.model, X)
        if self.recipe.build_loss().expects == "logits":
            outputs = softmax(outputs.astype(np.float64)).numpy()
        return outputs
