"""The commands of §4.22, registered by the core plugin: `lamina style-transfer CONTENT STYLE --out G.png`
(neural style transfer) and `lamina visualize-units RUN_DIR --layer L --unit U --out grid.png` (the
patches that most activate a unit of a trained model)."""
from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import click

from .cli import backend_option, select_backend
from .errors import LaminaError
from .style import DEFAULT_LAYERS, FEATURE_NETWORKS

NETWORK_TEXT = {"vgg16": "VGG-16 convolutional trunk", "alexnet": "AlexNet convolutional trunk"}


def _layer_list(ctx, param, value):
    if value is None:
        return None
    layers = [v.strip() for v in value.split(",") if v.strip()]
    if not layers:
        raise click.BadParameter(f"expected comma-separated layer names or indices, got {value!r}")
    return layers


def _weights_list(ctx, param, value):
    if value is None:
        return None
    try:
        weights = [float(v) for v in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from None
    if any(w < 0 for w in weights):
        raise click.BadParameter(f"the weights λ must be >= 0, got {value!r}")
    return weights


def _check_out(out: Path) -> None:
    """Fail as bad usage before any work when --out cannot be written."""
    from .images import image_format

    if not out.parent.is_dir():
        raise click.BadParameter(f"folder {out.parent} does not exist", param_hint="--out")
    try:
        image_format(out)
    except LaminaError as err:
        raise click.BadParameter(str(err), param_hint="--out") from None


def plot_costs(result, path, alpha: float, beta: float) -> Path | None:
    """J, α·J_content and β·J_style per step (log scale) as a PNG written atomically; None without matplotlib."""
    from .files import atomic_write
    from .plotting import have_matplotlib

    if not have_matplotlib():
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(result.costs, label="J(G) = α·J_content + β·J_style")
    ax.plot([alpha * c for c in result.content_costs], label="α·J_content", linestyle="--")
    ax.plot([beta * c for c in result.style_costs], label="β·J_style", linestyle=":")
    ax.set(xlabel="Adam step", ylabel="cost", yscale="log", title="neural style transfer")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    path = Path(path)
    atomic_write(path, buffer.getvalue())
    return path


@click.command("style-transfer")
@click.argument("content", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("style", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The generated image G (.png or .jpg); the cost curve goes to <stem>-cost.png beside it.")
@click.option("--steps", type=click.IntRange(min=0), default=100, show_default=True, help="Adam steps on G.")
@click.option("--size", type=click.IntRange(min=16), default=128, show_default=True,
              help="Longer side of G in pixels (CONTENT is resized to it, keeping its aspect ratio; STYLE to G's size).")
@click.option("--model", type=click.Choice(sorted(FEATURE_NETWORKS)), default="vgg16", show_default=True,
              help="Feature network: this model's convolutional trunk, cut after the deepest layer used.")
@click.option("--weights", type=click.Path(exists=True, path_type=Path),
              help="Trained filters: a .safetensors state_dict of the model (names 0.W, 0.b, 1.W, ...) or a "
                   "`lamina train` checkpoint folder. Default: random He-initialised filters from --seed.")
@click.option("--content-layer", help="Layer for J_content (default: conv3_2 for vgg16, conv4 for alexnet).")
@click.option("--style-layers", callback=_layer_list,
              help="Comma-separated layers for J_style (default: conv1_1,conv2_1,conv3_1 for vgg16, "
                   "conv1,conv2,conv3 for alexnet).")
@click.option("--style-weights", callback=_weights_list,
              help="Comma-separated λ^[l], one per style layer (default: equal, summing to 1).")
@click.option("--alpha", type=click.FloatRange(min=0), default=10.0, show_default=True, help="Weight α of J_content.")
@click.option("--beta", type=click.FloatRange(min=0), default=1000.0, show_default=True, help="Weight β of J_style.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=0.05, show_default=True,
              help="Adam's learning rate on pixel values in [0, 1].")
@click.option("--init-noise", type=click.FloatRange(0, 1), default=0.6, show_default=True,
              help="G starts as init_noise·uniform noise + (1 − init_noise)·CONTENT.")
@click.option("--imagenet-normalization", is_flag=True,
              help="Feed the network (x − ImageNet mean)/std, as torchvision-trained weights expect.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the random filters and of G's initial noise.")
@backend_option
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def style_transfer_command(content, style, out, steps, size, model, weights, content_layer, style_layers,
                           style_weights, alpha, beta, lr, init_noise, imagenet_normalization, seed, backend,
                           progress):
    """Generate an image with CONTENT's content in STYLE's style (neural style transfer, §4.22).

    Minimises J(G) = α·J_content(C, G) + β·J_style(S, G) over G's pixels with Adam. Without
    --weights the feature network has random filters (seeded): such networks reproduce colours
    and local textures of STYLE but not the painterly strokes a trained VGG-16 gives; pass
    trained weights for that (see docs/style-transfer.md).
    """
    from .images import load_image, save_image
    from .style import IMAGENET_MEAN, IMAGENET_STD, feature_network, load_weights, style_transfer

    select_backend(backend)
    default_content, default_style = DEFAULT_LAYERS[model]
    content_layer = content_layer or default_content
    style_layers = style_layers or list(default_style)
    if style_weights is not None and len(style_weights) != len(style_layers):
        raise click.BadParameter(f"got {len(style_weights)} weights for {len(style_layers)} style layers "
                                 f"({', '.join(style_layers)})", param_hint="--style-weights")
    try:
        network = feature_network(model, upto=[content_layer, *style_layers], seed=seed)
    except LaminaError as err:
        raise click.BadParameter(str(err), param_hint="--content-layer/--style-layers") from None
    _check_out(out)
    try:
        C = load_image(content, size=size)
        S = load_image(style, size=C.shape[1:3])
        if weights is not None:
            load_weights(network, weights)
        filters = f"weights from {weights}" if weights is not None else f"random He-initialised filters (seed {seed})"
        click.echo(f"feature network: {NETWORK_TEXT[model]} up to {network[-1].name}, {filters}", err=True)
        started = time.perf_counter()
        result = style_transfer(C, S, network, content_layer, style_layers, alpha=alpha, beta=beta, steps=steps,
                                lr=lr, init_noise=init_noise, seed=seed, style_weights=style_weights,
                                progress=progress and sys.stderr.isatty(),
                                mean=IMAGENET_MEAN if imagenet_normalization else None,
                                std=IMAGENET_STD if imagenet_normalization else None)
        seconds = time.perf_counter() - started
        save_image(out, result.image)
        plot = plot_costs(result, out.with_name(f"{out.stem}-cost.png"), alpha, beta)
    except LaminaError as err:
        raise click.ClickException(str(err)) from None
    n_H, n_W = result.image.shape[1:3]
    click.echo(f"wrote {out} ({n_W}×{n_H}); J(G) {result.costs[0]:.4g} -> {result.costs[-1]:.4g} "
               f"in {steps} steps ({seconds:.1f} s)")
    if plot is not None:
        click.echo(f"wrote {plot}")
    else:
        click.echo("matplotlib is not installed, so no cost curve was drawn (pip install 'lamina[plots]')")


@click.command("visualize-units")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--layer", required=True, help="Layer of the model: its name (e.g. conv2d_4) or index.")
@click.option("--unit", type=click.IntRange(min=0), required=True, help="The unit: a channel of LAYER.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The grid image of the patches (.png).")
@click.option("--k", type=click.IntRange(min=1), default=9, show_default=True, help="How many patches.")
@click.option("--split", type=click.Choice(["train", "dev", "test"]), default="train", show_default=True,
              help="The recipe's data split to search.")
@backend_option
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
def visualize_units_command(run_dir, layer, unit, out, k, split, backend, progress):
    """Write the K patches of a data split that most activate UNIT of LAYER in the model trained in
    RUN_DIR (a `lamina train` output folder), as a grid (§4.22, "what are deep ConvNets learning").

    Each patch is the unit's receptive field in the input image (clipped at the borders), cut from the
    images before any input normalization; the grid is 3 wide, highest activation first.
    """
    import numpy as np

    from .run import TrainedModel
    from .style import layer_index
    from .visualize import receptive_field, save_patch_grid, top_patches

    select_backend(backend)
    _check_out(out)
    try:
        trained = TrainedModel(run_dir)
        data = trained.recipe.load_data()
    except LaminaError as err:
        raise click.ClickException(str(err)) from None
    model, input_shape = trained.model, tuple(trained.input_shape)
    if len(input_shape) != 3:
        raise click.BadParameter(f"the model in {run_dir} takes flat inputs of shape {input_shape}, not images "
                                 f"(n_H, n_W, n_C): its units have no receptive field", param_hint="RUN_DIR")
    try:
        index = layer_index(model, layer, "--layer")
        field = receptive_field(model, index, input_shape[:2])
    except LaminaError as err:
        raise click.BadParameter(str(err), param_hint="--layer") from None
    shape = (None,) + input_shape
    for i in range(index + 1):
        shape = model[i].output_shape(shape)
    if unit >= shape[3]:
        raise click.BadParameter(f"layer {model[index].name!r} has {shape[3]} units (channels 0 to {shape[3] - 1}), "
                                 f"got {unit}", param_hint="--unit")
    chosen = getattr(data, split, None)
    if chosen is None:
        raise click.BadParameter(f"the recipe {trained.recipe.name!r} has no {split} split", param_hint="--split")
    images = np.asarray(chosen.X).reshape((len(chosen.X),) + input_shape)
    X = trained.normalizer.transform(images) if trained.normalizer is not None else images
    try:
        patches = top_patches(model, index, unit, X, k=k, images=images, progress=progress and sys.stderr.isatty())
        save_patch_grid(patches, out)
    except LaminaError as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"layer {model[index].name!r} unit {unit}: receptive field {field.size}×{field.size} pixels "
               f"(jump {field.jump}); top {len(patches)} of {len(images)} {split} images:")
    for p in patches:
        click.echo(f"  image {p.image:>5} at ({p.row}, {p.col})  activation {p.activation:.4g}  "
                   f"box rows {p.box[0]}:{p.box[2]}, cols {p.box[1]}:{p.box[3]}")
    click.echo(f"wrote {out}")
