"""Running a recipe end to end into an output folder: checkpoint, metrics.json, the config
used (config.toml) and a learning-curve PNG."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import tomli_w

from . import plotting, training
from .backend import get_backend, manual_seed
from .errors import ConfigError
from .recipes import Recipe

CHECKPOINT_DIR = "checkpoint"


def _write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def train_recipe(recipe: Recipe, out_dir, resume: bool = False, progress: bool = True, echo=print) -> dict:
    """Train `recipe`, evaluate on train/dev/test and write the results into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config_path = out_dir / "config.toml"
    config = recipe.to_dict()
    if resume and config_path.is_file():
        import tomllib

        previous = tomllib.loads(config_path.read_text())
        for section in ("data", "model", "loss", "optimizer"):
            if previous.get(section) != config.get(section):
                raise ConfigError(f"cannot resume in {out_dir}: its [{section}] differs from this recipe's; "
                                  f"use another --out or the same recipe")
    _write_text(config_path, tomli_w.dumps(config))

    settings = recipe.training
    manual_seed(settings["seed"])
    data = recipe.load_data()
    model = recipe.build_model(data.num_features)
    loss_fn, metrics = recipe.build_loss(), recipe.build_metrics()
    optimizer = recipe.build_optimizer(model.parameters())
    backend = get_backend().name
    echo(f"training {recipe.name!r} on backend {backend!r}: {model.num_parameters():,} parameters, "
         f"{len(data.train)} training examples, {settings['epochs']} epochs")

    def report(epoch, history):
        dev = history.dev_metrics[-1] if history.dev_metrics else {}
        shown = "  ".join(f"dev {k} {v:.4f}" for k, v in dev.items())
        echo(f"epoch {epoch:>3}/{settings['epochs']}  cost {history.epoch_cost[-1]:.4f}  {shown}")

    history = training.fit(model, loss_fn, optimizer, data.train, data.dev, epochs=settings["epochs"],
                           batch_size=settings["batch_size"], metrics=metrics, seed=settings["seed"],
                           checkpoint_dir=out_dir / CHECKPOINT_DIR, resume=resume, progress=progress,
                           metadata={"recipe": recipe.name, "backend": backend}, on_epoch_end=report)

    results = {"recipe": recipe.name, "backend": backend, "epochs": len(history.epoch_cost),
               "num_parameters": model.num_parameters()}
    for split_name in ("train", "dev", "test"):
        split = getattr(data, split_name)
        if split is not None:
            for key, value in training.evaluate(model, loss_fn, split, metrics).items():
                results[f"{split_name}_{key}"] = value
    results["epoch_cost"] = history.epoch_cost
    results["history"] = history.to_dict()
    _write_text(out_dir / "metrics.json", json.dumps(results, indent=2))
    plot = plotting.learning_curve(history, out_dir / "learning_curve.png", title=recipe.name)
    if plot is None:
        echo("matplotlib is not installed, so no learning_curve.png was drawn (pip install 'lamina[plots]')")
    return results
