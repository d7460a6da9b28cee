"""Adam (§2.15): momentum + RMSprop with bias correction. ε goes outside the square root by
default, as PyTorch and Keras place it; `epsilon_inside_sqrt=True` puts it inside, as the seed writes it."""
from .optimizer import Optimizer


class Adam(Optimizer):
    """v = β1·v + (1-β1)·dθ, s = β2·s + (1-β2)·dθ², v̂ = v/(1-β1^t), ŝ = s/(1-β2^t),
    θ ← θ - α·v̂/(√ŝ + ε), or θ ← θ - α·v̂/√(ŝ + ε) with `epsilon_inside_sqrt`."""

    name, op = "adam", "adam_update"
    state_names = ("v", "s")

    def __init__(self, params, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 epsilon: float = 1e-8, epsilon_inside_sqrt: bool = False):
        super().__init__(params, lr)
        self.beta1, self.beta2 = self._beta("beta1", beta1), self._beta("beta2", beta2)
        self.epsilon = self._number("epsilon", epsilon, low=0.0)
        self.epsilon_inside_sqrt = self._flag("epsilon_inside_sqrt", epsilon_inside_sqrt)

    def hyperparameters(self) -> dict:
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "epsilon": self.epsilon,
                "epsilon_inside_sqrt": self.epsilon_inside_sqrt, "step": self.step_count}
