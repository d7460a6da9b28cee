"""The core's own plugin: registers Lamina's built-in ops and components through the
same hooks that installed plugins use."""
from __future__ import annotations

from . import augment, datasets, functional, init, losses, metrics, optim, schedules
from .hookspecs import hookimpl
from .nn import BatchNorm, Dropout
from .nn.conv import CONV_LAYERS
from .nn.core import LAYERS
from .nn.embedding import Embedding
from .nn.recurrent import RECURRENT_LAYERS
from .nn.residual import ResidualBlock
from .nn.inception import AdaptiveAvgPool2D, InceptionModule
from .nn.lrn import LocalResponseNorm
from .ops import CORE_OPS
from .regularizers import REGULARIZERS


@hookimpl
def lamina_register_ops(register):
    for op in CORE_OPS:
        register(op)


@hookimpl
def lamina_register_components(register):
    for name, fn in functional.ACTIVATIONS.items():
        register("activations", name, fn)
    for name, layer in {**LAYERS, **CONV_LAYERS, "dropout": Dropout, "batch_norm": BatchNorm,
                        "residual_block": ResidualBlock, "local_response_norm": LocalResponseNorm,
                        "inception": InceptionModule, "adaptive_avg_pool2d": AdaptiveAvgPool2D,
                        **RECURRENT_LAYERS, "embedding": Embedding}.items():
        register("layers", name, layer)
    for kind, classes in (("losses", losses.LOSSES), ("metrics", metrics.METRICS),
                          ("optimizers", optim.OPTIMIZERS), ("schedules", schedules.SCHEDULES),
                          ("initializers", init.INITIALIZERS), ("regularizers", REGULARIZERS)):
        for cls in classes:
            register(kind, cls.name, cls)
    from . import language_model

    register("layers", "language_model", language_model.LanguageModel)
    for kind, classes in (("losses", language_model.LOSSES), ("metrics", language_model.METRICS)):
        for cls in classes:
            register(kind, cls.name, cls)
    from . import models

    register("losses", models.AuxiliaryLoss.name, models.AuxiliaryLoss)   # GoogLeNet's main + 0.3·side branches
    for name in models.__all__:         # the builders a recipe names as [model] builder = "lenet5"
        register("models", name, getattr(models, name))
    for cls in augment.AUGMENTATIONS:
        register("augmentations", cls.name, cls)
    for name, loader in datasets.DATASETS.items():
        register("datasets", name, loader)
    from .recipes import builtin_recipes

    for name, recipe in builtin_recipes().items():
        register("recipes", name, recipe)


@hookimpl
def lamina_register_commands(cli):
    from .diagnose import diagnose_command
    from .hparams.command import hparams
    from .sample_command import sample_command
    from .style_command import style_transfer_command, visualize_units_command

    cli.add_command(diagnose_command)
    cli.add_command(hparams)
    cli.add_command(sample_command)
    cli.add_command(style_transfer_command)
    cli.add_command(visualize_units_command)
