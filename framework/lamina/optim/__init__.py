"""Optimizers (`lamina.optim`): plain gradient descent, momentum, RMSprop and Adam (§2.11-2.15)."""
from .adam import Adam
from .momentum import Momentum
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

OPTIMIZERS = [SGD, Momentum, RMSprop, Adam]

__all__ = ["Optimizer", "SGD", "Momentum", "RMSprop", "Adam", "OPTIMIZERS"]
