"""Plain (mini-batch) gradient descent: θ ← θ - α·dθ (§1.2)."""
from .optimizer import Optimizer


class SGD(Optimizer):
    name, op = "sgd", "sgd_update"

    def __init__(self, params, lr: float = 0.01):
        super().__init__(params, lr)
