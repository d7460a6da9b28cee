"""The pluggy hook that registers the backend (entry point `numpy_example`, group `lamina`)."""
import lamina


@lamina.hookimpl
def lamina_register_backends(register):
    from .backend import NumpyExampleBackend

    register("numpy_example", NumpyExampleBackend)
