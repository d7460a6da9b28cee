"""Word embeddings (§5.2 of the sequence course, used from §5.1 on): `Embedding(V, d)`, a lookup table."""
from __future__ import annotations

from .. import functional as F
from ..backend import get_backend
from ..dtypes import get_default_dtype
from ..errors import OpError, ShapeError
from ..tensor import Parameter, Tensor
from .layer import Layer


class Embedding(Layer):
    """e = E[w]: the vector of word w is row w of E (V, d) (the seed writes E with words as columns,
    e_w = E·o_w; a lookup is that product without the one-hot). Indices (m, …) -> (m, …, d); the gradient
    adds each position's output gradient into the row it read (only the rows used change). E starts as
    N(0, 1), as PyTorch's."""

    weight_names = ("E",)

    def __init__(self, V: int, d: int, name: str | None = None):
        super().__init__(name)
        if int(V) <= 0 or int(d) <= 0:
            raise ShapeError(f"Embedding layer {self.name!r}: V (vocabulary size) and d (embedding size) must be "
                             f"positive, got {V} and {d}")
        self.V, self.d = int(V), int(d)
        backend = get_backend()
        self.E = Parameter._wrap(backend.random_normal((self.V, self.d), get_default_dtype()), backend,
                                 requires_grad=True)

    def forward(self, indices):
        if not isinstance(indices, Tensor):
            indices = Tensor(indices, backend=self.E.backend)
        if indices.dtype.kind not in "iu":
            raise OpError(f"Embedding layer {self.name!r}: expected integer word indices, got dtype {indices.dtype}")
        return F.embedding(indices, self.E)

    def output_shape(self, input_shape):
        return tuple(input_shape) + (self.d,)

    def describe(self) -> str:
        return f"V={self.V}, d={self.d}"
