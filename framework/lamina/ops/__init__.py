"""Ops: defined once here (name, checks, samples), computed by each backend's kernels."""
from .composites import COMPOSITE_OPS
from .convolution import CONVOLUTION_OPS
from .joining import JOINING_OPS
from .lrn import LRN_OPS
from .normalization import NORMALIZATION_OPS
from .primitives import PRIMITIVE_OPS
from .recurrent import RECURRENT_OPS
from .updates import UPDATE_OPS
from .registry import COMPOSITE, PRIMITIVE, Op, Sample, all_ops, call, get_op, op_owner, register_op

#: every op the core defines, as the core's plugin registers them
CORE_OPS = PRIMITIVE_OPS + COMPOSITE_OPS + NORMALIZATION_OPS + CONVOLUTION_OPS + JOINING_OPS + LRN_OPS + RECURRENT_OPS + UPDATE_OPS

__all__ = ["CORE_OPS", "UPDATE_OPS", "NORMALIZATION_OPS", "CONVOLUTION_OPS", "JOINING_OPS", "LRN_OPS", "RECURRENT_OPS", "Op", "Sample", "PRIMITIVE", "COMPOSITE", "PRIMITIVE_OPS",
           "COMPOSITE_OPS", "call", "get_op", "all_ops", "op_owner", "register_op"]
