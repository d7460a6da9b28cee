"""The hooks through which every backend and plugin, the built-in ones included, registers.

Each hook receives a `register` callback; an implementation may take fewer arguments than
the spec, so specs can grow without breaking plugins.
"""
import pluggy

hookspec = pluggy.HookspecMarker("lamina")
hookimpl = pluggy.HookimplMarker("lamina")


@hookspec
def lamina_register_ops(register):
    """Add ops: `register(op: lamina.ops.Op, override=False)`."""


@hookspec
def lamina_register_backends(register):
    """Add backends: `register(name, backend_class, override=False)`."""


@hookspec
def lamina_register_kernels(register):
    """Add kernels to a backend: `register(backend_name, op_name, fn, override=False)` where
    `fn(*arrays, **attrs) -> (out, backprop)`. Registered only if that backend exists."""


@hookspec
def lamina_register_components(register):
    """Add components: `register(kind, name, obj, override=False)`; kind is one of lamina.registry.KINDS:
    layers, activations, losses, metrics, optimizers, schedules, regularizers, initializers, datasets,
    recipes, augmentations, models."""


@hookspec
def lamina_register_commands(cli):
    """Add click commands to the `lamina` CLI group: `cli.add_command(command)`."""
