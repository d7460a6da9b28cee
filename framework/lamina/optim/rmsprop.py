"""RMSprop (§2.14): divide each step by the root mean square of recent gradients, so directions
with large, oscillating gradients move slowly and the others fast."""
from .optimizer import Optimizer


class RMSprop(Optimizer):
    """s = β·s + (1-β)·dθ², θ ← θ - α·dθ/(√s + ε) (PyTorch, Keras; the default), or
    θ ← θ - α·dθ/√(s + ε) with `epsilon_inside_sqrt` (as the seed writes it).
    `torch.optim.RMSprop(alpha=β, eps=ε)` is the default form."""

    name, op = "rmsprop", "rmsprop_update"
    state_names = ("s",)

    def __init__(self, params, lr: float = 0.001, beta: float = 0.9, epsilon: float = 1e-8,
                 epsilon_inside_sqrt: bool = False):
        super().__init__(params, lr)
        self.beta = self._beta("beta", beta)
        self.epsilon = self._number("epsilon", epsilon, low=0.0)
        self.epsilon_inside_sqrt = self._flag("epsilon_inside_sqrt", epsilon_inside_sqrt)

    def hyperparameters(self) -> dict:
        return {"lr": self.lr, "beta": self.beta, "epsilon": self.epsilon,
                "epsilon_inside_sqrt": self.epsilon_inside_sqrt}
