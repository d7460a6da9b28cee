"""Registers the CUDA backend with Lamina (entry point `cuda` in the group `lamina`)."""
from lamina import hookimpl


@hookimpl
def lamina_register_backends(register):
    from .backend import CudaBackend

    register("cuda", CudaBackend)
