"""Optimizers (`lamina.optim`)."""
from .adam import Adam
from .optimizer import Optimizer
from .sgd import SGD

OPTIMIZERS = [SGD, Adam]

__all__ = ["Optimizer", "SGD", "Adam", "OPTIMIZERS"]
