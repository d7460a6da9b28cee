"""Testing tools for backend and plugin authors: the backend conformance suite and `run_layer_test`."""
from .conformance import (TOLERANCES, Tolerance, check_backend, check_op, conformance_params,
                          differentiable_op_names, gradcheck_op, op_names, reference_backend, resolve_backend)
from .layers import LayerTestReport, run_layer_test

__all__ = ["check_op", "check_backend", "gradcheck_op", "op_names", "differentiable_op_names",
           "conformance_params", "reference_backend", "resolve_backend", "Tolerance", "TOLERANCES",
           "run_layer_test", "LayerTestReport"]
