"""Adam (§2.15): momentum + RMSprop with bias correction; ε outside the square root
(as PyTorch and Keras place it)."""
from ..errors import LaminaError
from .optimizer import Optimizer


class Adam(Optimizer):
    """v = β1·v + (1-β1)·dθ, s = β2·s + (1-β2)·dθ², θ ← θ - α·v̂/(√ŝ + ε)."""

    name, op = "adam", "adam_update"
    state_names = ("v", "s")

    def __init__(self, params, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 epsilon: float = 1e-8):
        super().__init__(params, lr)
        for label, beta in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= beta < 1.0:
                raise LaminaError(f"Adam: {label} must lie in [0, 1), got {beta}")
        self.beta1, self.beta2, self.epsilon = float(beta1), float(beta2), float(epsilon)

    def hyperparameters(self) -> dict:
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "epsilon": self.epsilon,
                "step": self.step_count}
