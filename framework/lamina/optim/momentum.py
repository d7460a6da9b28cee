"""Gradient descent with momentum (§2.13): step along an exponentially weighted average of the
gradients instead of the gradient itself."""
from ..ops.updates import check_dampening
from .optimizer import Optimizer


class Momentum(Optimizer):
    """dampening "ewa" (the seed's form): v = β·v + (1-β)·dθ, θ ← θ - α·v.
    dampening "simplified": v = β·v + dθ, θ ← θ - α·v (PyTorch's SGD with momentum β).

    The simplified form is the ewa form with α scaled by 1/(1-β): ewa at α moves exactly as
    simplified (or `torch.optim.SGD(momentum=β)`) at α·(1-β). PyTorch's `dampening=β` is *not*
    the ewa form: it starts its average at dθ₁ instead of (1-β)·dθ₁.
    """

    name, op = "momentum", "momentum_update"
    state_names = ("v",)

    def __init__(self, params, lr: float = 0.01, beta: float = 0.9, dampening: str = "ewa"):
        super().__init__(params, lr)
        self.beta = self._beta("beta", beta)
        check_dampening("Momentum", dampening)
        self.dampening = dampening

    def hyperparameters(self) -> dict:
        return {"lr": self.lr, "beta": self.beta, "dampening": self.dampening}
