"""Layers (`lamina.nn`)."""
from .batchnorm import BatchNorm
from .conv import AvgPool2D, Conv2D, Flatten, GlobalAvgPool2D, MaxPool2D
from .core import Activation, Dense, LeakyReLU, ReLU, Sequential, Sigmoid, Softmax, Tanh
from .dropout import Dropout
from .embedding import Embedding
from .inception import AdaptiveAvgPool2D, ConvUnit, InceptionModule
from .layer import Layer
from .recurrent import GRU, LSTM, Bidirectional, SimpleRNN, TimeDistributed, detach_state, stacked
from .lrn import LocalResponseNorm
from .residual import ResidualBlock
from .sliding import dense_head_to_conv

__all__ = ["Layer", "Dense", "Sequential", "Activation", "ReLU", "Sigmoid", "Tanh", "LeakyReLU", "Softmax", "Dropout",
           "BatchNorm", "Conv2D", "MaxPool2D", "AvgPool2D", "GlobalAvgPool2D", "Flatten",
           "ResidualBlock", "LocalResponseNorm", "InceptionModule", "ConvUnit", "AdaptiveAvgPool2D", "dense_head_to_conv",
           "SimpleRNN", "GRU", "LSTM", "Bidirectional", "TimeDistributed", "Embedding", "stacked", "detach_state"]
