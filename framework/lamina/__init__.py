"""Lamina: every classic idea of deep learning as a real, fast, tested component.

    import lamina as lm
    model = lm.nn.Sequential(lm.nn.Dense(64, 128, activation="relu"), lm.nn.Dense(128, 10))
    loss = lm.F.softmax_cross_entropy(model(lm.tensor(X)), lm.tensor(y))
    loss.backward()
"""
from . import _openblas  # noqa: F401  (first: sets OpenBLAS's thread timeout before NumPy loads it)
from . import (checkpoint, clipping, data, diagnose, functional, init, losses, metrics, models, nn, optim, schedules,
               preprocessing, regularizers, training, transfer)
from . import augment, ensemble
from . import images, style, visualize
from . import language_model, text
from ._version import __version__
from .autograd import enable_grad, is_grad_enabled, no_grad
from .backend import Backend, get_backend, kernel, manual_seed, use_backend
from .dtypes import get_default_dtype, set_default_dtype
from .errors import (BackendError, CheckpointError, ConfigError, LaminaError, OpError, RegistrationError,
                     ShapeError, TrainingDiverged)
from .gradcheck import GradcheckResult, gradcheck
from .hookspecs import hookimpl
from .tensor import Parameter, Tensor, tensor

F = functional

__all__ = ["__version__", "Tensor", "Parameter", "tensor", "no_grad", "enable_grad", "is_grad_enabled",
           "set_default_dtype", "get_default_dtype", "use_backend", "get_backend", "manual_seed", "Backend",
           "kernel", "gradcheck", "GradcheckResult", "hookimpl", "nn", "optim", "functional", "F", "losses",
           "metrics", "init", "data", "training", "checkpoint", "clipping", "schedules", "diagnose", "transfer",
           "regularizers", "preprocessing", "augment", "ensemble", "images", "style", "visualize",
           "text", "language_model",
           "LaminaError", "ShapeError", "OpError", "BackendError", "RegistrationError", "ConfigError",
           "CheckpointError", "TrainingDiverged"]
