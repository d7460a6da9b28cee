"""Layers (`lamina.nn`)."""
from .batchnorm import BatchNorm
from .core import Activation, Dense, LeakyReLU, ReLU, Sequential, Sigmoid, Softmax, Tanh
from .dropout import Dropout
from .layer import Layer

__all__ = ["Layer", "Dense", "Sequential", "Activation", "ReLU", "Sigmoid", "Tanh", "LeakyReLU", "Softmax", "Dropout",
           "BatchNorm"]
