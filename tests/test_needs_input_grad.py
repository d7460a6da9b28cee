"""Kernels with a `needs_input_grad` parameter learn which inputs require grad."""
import numpy as np

import lamina
from lamina.backend import load_backend


def test_a_kernel_taking_needs_input_grad_is_told_which_inputs_require_grad():
    backend = load_backend("cpu")
    original = backend.kernels["dense"]
    seen = []

    def spy(x, W, b=None, *, needs_input_grad=None):
        seen.append(needs_input_grad)
        return original(x, W, b, needs_input_grad=needs_input_grad)

    backend.add_kernel("dense", spy)
    try:
        with lamina.use_backend("cpu"):
            x = lamina.tensor(np.ones((2, 3)))
            W = lamina.tensor(np.ones((3, 4)), requires_grad=True)
            b = lamina.tensor(np.zeros(4))
            lamina.F.dense(x, W, b).sum().backward()
            with lamina.no_grad():
                lamina.F.dense(x, W, b)
    finally:
        backend.add_kernel("dense", original)
    assert seen == [(False, True, False), None]
    assert W.grad.numpy().shape == (3, 4)
    assert "dense" in backend.kernels_taking_input_mask
