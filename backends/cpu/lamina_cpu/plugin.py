"""Registers the CPU backend with Lamina (entry point `cpu` in the group `lamina`)."""
from lamina import hookimpl


@hookimpl
def lamina_register_backends(register):
    from .backend import CpuBackend

    register("cpu", CpuBackend)
