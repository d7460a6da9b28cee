"""A minimal third-party Lamina backend: the primitive ops in pure NumPy (see
docs/writing-a-backend.md). Everything else runs on it through the composite defaults."""
from .backend import NumpyExampleBackend

__all__ = ["NumpyExampleBackend"]
