"""Layers (`lamina.nn`)."""
from .core import Activation, Dense, LeakyReLU, ReLU, Sequential, Sigmoid, Softmax, Tanh
from .layer import Layer

__all__ = ["Layer", "Dense", "Sequential", "Activation", "ReLU", "Sigmoid", "Tanh", "LeakyReLU", "Softmax"]
