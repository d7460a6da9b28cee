"""Ops: defined once here (name, checks, samples), computed by each backend's kernels."""
from .composites import COMPOSITE_OPS
from .primitives import PRIMITIVE_OPS
from .registry import COMPOSITE, PRIMITIVE, Op, Sample, all_ops, call, get_op, op_owner, register_op

__all__ = ["Op", "Sample", "PRIMITIVE", "COMPOSITE", "PRIMITIVE_OPS", "COMPOSITE_OPS", "call", "get_op",
           "all_ops", "op_owner", "register_op"]
