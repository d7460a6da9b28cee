"""The `lamina` command line (click). Plugins add commands through `lamina_register_commands`."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ._version import __version__
from .errors import BackendError, ConfigError, LaminaError, UnknownNameError


class LaminaGroup(click.Group):
    """A group that adds the plugins' commands the first time it lists or looks one up
    (and again if the plugins were rediscovered since)."""

    _commands_from = None   # the plugin manager whose commands were added

    def _add_plugin_commands(self, ctx) -> None:
        from .plugins import get_manager

        try:
            manager = get_manager()
        except LaminaError as err:
            click.echo(f"lamina: plugins could not be loaded: {err}", err=True)
            return
        if self._commands_from is not manager:
            self._commands_from = manager
            manager.register_commands(self)

    def list_commands(self, ctx):
        self._add_plugin_commands(ctx)
        return super().list_commands(ctx)

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is None:
            self._add_plugin_commands(ctx)
            command = super().get_command(ctx, name)
        return command


@click.group(cls=LaminaGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="lamina")
def cli():
    """Lamina: every classic idea of deep learning as a real, fast, tested component."""


class BatchSize(click.ParamType):
    """A positive integer, or 'full' / 'stochastic' (§2.11)."""

    name = "SIZE"

    def convert(self, value, param, ctx):
        from .recipes import BATCH_MODES

        if isinstance(value, int) or value in BATCH_MODES:
            return value
        try:
            size = int(value)
        except ValueError:
            size = 0
        if size < 1:
            self.fail(f"{value!r} is neither a positive integer nor one of {', '.join(BATCH_MODES)}", param, ctx)
        return size


def backend_option(fn):
    return click.option("--backend", metavar="NAME",
                        help="Backend to run on (overrides LAMINA_BACKEND and lamina.toml).")(fn)


def select_backend(name: str | None) -> None:
    """Apply --backend (highest precedence) and fail as bad usage if it cannot be used."""
    from . import config
    from .backend import get_backend

    config.set_flag("backend", name)
    try:
        get_backend()
    except BackendError as err:
        raise click.UsageError(str(err)) from None
    except ConfigError as err:
        raise click.ClickException(str(err)) from None


def load_recipe_argument(name: str):
    from .recipes import load_recipe

    try:
        return load_recipe(name)
    except (ConfigError, UnknownNameError) as err:
        if name.endswith(".toml") and Path(name).is_file():
            raise click.ClickException(str(err)) from None
        raise click.BadParameter(str(err), param_hint="RECIPE") from None


@cli.command()
def backends():
    """List the backends, whether each is available (and why not) and which plugin provides it."""
    from .plugins import get_manager

    manager = get_manager()
    rows = [("NAME", "AVAILABLE", "PROVIDED BY", "NOTES")]
    for name, entry in sorted(manager.backends.items()):
        ok, reason = entry.factory.availability()
        info = manager.info.get(entry.plugin)
        provider = f"{entry.plugin} ({info.distribution} {info.version})" if info else entry.plugin
        rows.append((name, "yes" if ok else "no", provider, reason if not ok else entry.factory.description))
    _table(rows)


@cli.command()
def plugins():
    """List the plugins: name, version and what each registered; and any that failed."""
    from .plugins import get_manager

    manager = get_manager()
    listed = []
    for info in manager.info.values():
        kinds: dict[str, list[str]] = {}
        for item in info.registered:
            kind, _, name = item.partition(":")
            kinds.setdefault(_plural(kind), []).append(name)
        listed.append((info, kinds))
    width = max((len(kind) for _, kinds in listed for kind in kinds), default=0) + 2
    for info, kinds in listed:
        click.echo(f"{info.name} {info.version} (distribution {info.distribution})")
        for kind, names in sorted(kinds.items()):
            click.echo(f"  {kind + ':':<{width}}{', '.join(names)}")
    if manager.disabled:
        click.echo(f"disabled: {', '.join(sorted(manager.disabled))}")
    for failure in manager.failures:
        click.echo(f"FAILED {failure.name} (distribution {failure.distribution}): {failure.error}")


@cli.command("config")
def show_config():
    """Show each effective setting and where it came from."""
    from .config import PROJECT_FILE, resolve, user_config_path

    try:
        settings = resolve()
    except ConfigError as err:
        raise click.ClickException(str(err)) from None
    for name, setting in settings.items():
        value = ", ".join(setting.value) if isinstance(setting.value, list) else setting.value
        click.echo(f"{name} = {value or '(none)'}    [{setting.source}]")
    click.echo(f"config files, lowest precedence first: {user_config_path()}, {Path.cwd() / PROJECT_FILE}")


@cli.command()
def recipes():
    """List the registered recipes."""
    from .registry import get, names

    for name in names("recipes"):
        click.echo(f"{name:<24} {get('recipes', name).description}")


def _default_out(recipe_name: str) -> Path:
    base = Path("runs") / recipe_name
    candidate, n = base, 1
    while candidate.exists():
        n += 1
        candidate = base.with_name(f"{recipe_name}-{n}")
    return candidate


@cli.command()
@click.argument("recipe")
@backend_option
@click.option("--epochs", type=click.IntRange(min=1), help="Number of epochs.")
@click.option("--batch-size", type=BatchSize(), help="Mini-batch size, or 'full' (batch gradient descent) "
              "or 'stochastic' (one example at a time).")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Learning rate α.")
@click.option("--seed", type=int, help="Random seed (initialization and shuffling).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (default: a new runs/<recipe>[-N]).")
@click.option("--resume", is_flag=True, help="Continue the run whose checkpoint is in --out.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def train(recipe, backend, epochs, batch_size, lr, seed, out, resume, progress):
    """Train RECIPE (a registered name, see `lamina recipes`, or a FILE.toml)."""
    from . import checkpoint
    from .run import CHECKPOINT_DIR, train_recipe

    select_backend(backend)
    spec = load_recipe_argument(recipe).with_overrides(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed)
    if resume and out is None:
        raise click.UsageError("--resume needs --out, the folder of the run to continue")
    if out is not None and not resume and checkpoint.exists(out / CHECKPOINT_DIR):
        raise click.UsageError(f"{out} already holds a checkpoint; pass --resume to continue it, "
                               f"or choose another --out")
    out = out or _default_out(spec.name)
    try:
        results = train_recipe(spec, out, resume=resume, progress=progress and sys.stderr.isatty(),
                               echo=click.echo)
    except LaminaError as err:
        raise click.ClickException(str(err)) from None
    def headline(values: dict) -> dict:
        return {k: v for k, v in values.items() if k.endswith(("accuracy", "cost")) and not isinstance(v, list)}

    if "variants" in results:
        click.echo(json.dumps({label: headline(v) for label, v in results["variants"].items()}, indent=2))
        click.echo(f"wrote {out}/: one folder per variant, metrics.json, config.toml"
                   + (", comparison.png" if (out / "comparison.png").exists() else ""))
        return
    click.echo(json.dumps(headline(results), indent=2))
    click.echo(f"wrote {out}/: checkpoint/, metrics.json, config.toml"
               + (", learning_curve.png" if (out / "learning_curve.png").exists() else ""))


@cli.command()
@click.argument("recipe")
@backend_option
@click.option("--examples", type=click.IntRange(min=1), default=4, show_default=True,
              help="Training examples in the checked batch.")
@click.option("--epsilon", type=float, default=1e-6, show_default=True, help="ε of the two-sided difference.")
@click.option("--seed", type=int, default=0, show_default=True)
def gradcheck(recipe, backend, examples, epsilon, seed):
    """Check RECIPE's backpropagation against two-sided differences (§2.10), in float64."""
    from .backend import get_backend, manual_seed
    from .dtypes import set_default_dtype
    from .gradcheck import gradcheck as check
    from .tensor import tensor

    select_backend(backend)
    spec = load_recipe_argument(recipe)
    try:
        with set_default_dtype("float64"):
            manual_seed(seed)
            data = spec.load_data()
            model = spec.build_model(data.input_shape)
            loss_fn = spec.build_loss()
            X, y = tensor(data.train.X[:examples]), tensor(data.train.y[:examples])
            regularizer = spec.build_regularizer()
            params = {name: p for name, p in model.named_parameters() if p.requires_grad}
            switched_off = _switch_off_dropout(model)
            if switched_off:
                click.echo(f"dropout switched off for the check (§2.10): {', '.join(switched_off)}")

            def cost():      # J as training sees it, regularization term included (§2.10)
                J = loss_fn(model(X), y)
                return J + regularizer(model, examples) if regularizer is not None else J

            result = check(cost, params, epsilon=epsilon)
    except LaminaError as err:
        raise click.ClickException(str(err)) from None
    n = sum(p.size for p in params.values())
    click.echo(f"{spec.name}: {n:,} parameters, {examples} examples, backend {get_backend().name}")
    click.echo(str(result))
    sys.exit(0 if result.passed else 1)


@cli.command()
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("inputs", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@backend_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the predictions as CSV here (default: print them).")
def predict(run_dir, inputs, backend, out):
    """Predict with the model trained in RUN_DIR on INPUTS (.npy, or .csv of numbers, one example a row).

    The inputs are normalized exactly as the training set was (the statistics are in the checkpoint).
    """
    import numpy as np

    from .metrics import predicted_classes
    from .run import TrainedModel

    select_backend(backend)
    try:
        X = np.load(inputs, allow_pickle=False) if inputs.suffix == ".npy" else np.loadtxt(inputs, delimiter=",",
                                                                                          ndmin=2)
    except ValueError as err:
        raise click.BadParameter(f"cannot read {inputs}: {err}", param_hint="INPUTS") from None
    try:
        trained = TrainedModel(run_dir)
        outputs = trained.predict(X)
    except LaminaError as err:
        raise click.ClickException(str(err)) from None
    classes = predicted_classes(outputs)
    lines = ["class," + ",".join(f"p_{j}" if outputs.shape[1] > 1 else "p" for j in range(outputs.shape[1]))]
    lines += [f"{c}," + ",".join(f"{v:.6g}" for v in row) for c, row in zip(classes, outputs)]
    if out is None:
        click.echo("\n".join(lines))
    else:
        out.write_text("\n".join(lines) + "\n")
        click.echo(f"wrote {len(classes)} predictions to {out}")


def _switch_off_dropout(layer) -> list[str]:
    """Set keep_prob = 1 on every Dropout layer inside `layer` (the cost must be deterministic
    for a gradient check); the names of the layers changed."""
    from .nn import Dropout

    changed = []
    if isinstance(layer, Dropout) and layer.keep_prob < 1.0:
        layer.keep_prob = 1.0
        changed.append(layer.name)
    for child in layer.layers():
        changed += _switch_off_dropout(child)
    return changed


def _plural(kind: str) -> str:
    from .registry import KINDS, singular

    return next((k for k in KINDS if singular(k) == kind), kind + "s")


def _table(rows) -> None:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(f"{str(c):<{w}}" for c, w in zip(row, widths)).rstrip())


def main():
    cli(prog_name="lamina")
