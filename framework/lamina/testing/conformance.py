"""The backend conformance suite: every op's samples, run on a backend and on the float64 reference.

A backend conforms when, for every registered op and every `Sample` the op defines, its
forward outputs and (for differentiable ops) the gradients of every floating input agree
with `lamina.reference.ReferenceBackend` run in float64 on the same values:

    |got - want| <= atol·scale + rtol·|want|,   scale = max(1, max |want|)

with rtol 1e-6 / atol 1e-9 in float64 and rtol 1e-4 / atol 1e-5 in float32 (the float32
inputs are upcast exactly, so only the backend's own rounding is measured). Gradients come
from autograd under a random upstream gradient G: `(out * G).sum().backward()`. Each sample
runs twice on the backend: with fresh contiguous inputs, and with every input of two or more
dimensions made by the backend's own `transpose` (the strided arrays real graphs hand to
kernels). The suite also fails a backend whose kernel changes an input of an op that is not
`in_place`, returns the wrong dtype, or records no backward for a differentiable op.

Use it from pytest in a backend's own test suite:

    @pytest.mark.parametrize("case", conformance_params(["mybackend"]))
    def test_conformance(case):
        check_op(*case)
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from ..autograd import no_grad
from ..backend import Backend, backend_names, load_backend
from ..dtypes import to_dtype
from ..errors import LaminaError
from ..gradcheck import GradcheckResult, gradcheck
from ..ops import Op, Sample, all_ops, call, get_op
from ..reference import ReferenceBackend
from ..tensor import Tensor

FLOAT64 = np.dtype(np.float64)
DTYPES = ("float64", "float32")


@dataclass(frozen=True)
class Tolerance:
    """Elementwise bound |got - want| <= atol·max(1, max|want|) + rtol·|want|."""

    rtol: float
    atol: float


TOLERANCES = {np.dtype(np.float64): Tolerance(rtol=1e-6, atol=1e-9),
              np.dtype(np.float32): Tolerance(rtol=1e-4, atol=1e-5)}

_reference: ReferenceBackend | None = None


def reference_backend() -> ReferenceBackend:
    """The float64 oracle (one shared instance; it is not a registered backend)."""
    global _reference
    if _reference is None:
        _reference = ReferenceBackend(seed=0)
    return _reference


def resolve_backend(backend) -> Backend:
    """A Backend instance, or the instance of a registered backend name ("reference" is the oracle)."""
    if isinstance(backend, Backend):
        return backend
    if isinstance(backend, str):
        if backend == "reference" and backend not in backend_names():
            return reference_backend()
        return load_backend(backend)
    raise TypeError(f"expected a lamina.Backend or a backend name, got {type(backend).__name__}")


def op_names() -> list[str]:
    """Every registered op (the built-in ones and those plugins added), sorted."""
    return sorted(all_ops())


def differentiable_op_names() -> list[str]:
    return [name for name, op in sorted(all_ops().items()) if op.differentiable]


def conformance_params(backends, dtypes=DTYPES, ops=None) -> list:
    """`pytest.param((backend_name, op_name, dtype), id="backend-op-dtype")` for every combination.

    A registered backend that is unavailable on this machine gives skipped params (with the reason).
    """
    import pytest

    names = list(ops) if ops is not None else op_names()
    params = []
    for backend in backends:
        label = backend.name if isinstance(backend, Backend) else backend
        marks = ()
        if isinstance(backend, str) and backend != "reference":
            available, reason = _availability(backend)
            if not available:
                marks = (pytest.mark.skip(reason=f"backend {backend!r} is not available: {reason}"),)
        for op_name in names:
            for dtype in dtypes:
                dtype_name = to_dtype(dtype).name
                params.append(pytest.param((backend, op_name, dtype_name), id=f"{label}-{op_name}-{dtype_name}",
                                           marks=marks))
    return params


def _availability(name: str) -> tuple[bool, str]:
    from ..plugins import get_manager

    entry = get_manager().backends.get(name)
    if entry is None:
        load_backend(name)      # raises the "unknown backend ... did you mean" error
    return entry.factory.availability()


# ---- one op ------------------------------------------------------------------------------------
def check_op(backend, op_name: str, dtype="float64", seed: int | None = None) -> int:
    """Check every sample of op `op_name` on `backend` against the float64 reference.

    Raises AssertionError naming the backend, op, sample, output or input and the max
    abs/rel error. Returns the number of samples checked.
    """
    backend = resolve_backend(backend)
    op = get_op(op_name)
    dtype = to_dtype(dtype)
    tolerance = TOLERANCES.get(dtype, TOLERANCES[FLOAT64])
    rng = np.random.default_rng(_seed_for(op_name) if seed is None else seed)
    samples = list(op.samples(rng, dtype))
    if not samples:
        raise AssertionError(f"op {op_name!r} defines no samples, so no backend can be checked against it")
    for index, sample in enumerate(samples):
        where = f"backend {backend.name!r}, op {op_name!r}, sample {index}"
        _check_sample(backend, op, sample, dtype, tolerance, rng, where)
    return len(samples)


def check_backend(backend, dtypes=DTYPES, ops=None) -> int:
    """Run `check_op` for every op (or `ops`) in every dtype; one AssertionError lists all failures."""
    backend = resolve_backend(backend)
    failures, passed = [], 0
    for op_name in (ops if ops is not None else op_names()):
        for dtype in dtypes:
            try:
                check_op(backend, op_name, dtype)
                passed += 1
            except AssertionError as err:
                failures.append(str(err))
    if failures:
        raise AssertionError(f"backend {backend.name!r} fails {len(failures)} conformance check(s):\n"
                             + "\n".join(f"- {f}" for f in failures))
    return passed


def _seed_for(op_name: str) -> int:
    return zlib.crc32(op_name.encode())


@dataclass
class _Run:
    outputs: list          # NumPy arrays
    grads: list            # one per input: NumPy array, or None (not floating / no gradient)
    inputs_after: list     # the inputs' values after forward and backward
    requires_grad: list    # whether each output recorded a backward


LAYOUTS = ("contiguous", "transposed")


def _swap_last(ndim: int) -> tuple:
    return tuple(range(ndim - 2)) + (ndim - 1, ndim - 2)


def _make_inputs(backend, sample: Sample, cast_to, differentiable: bool, layout: str = "contiguous"):
    """(leaves, op inputs). In the "transposed" layout every input of 2+ dimensions is built as the
    backend's own `transpose` of a swapped copy, so kernels meet the strided arrays real graphs make."""
    leaves, inputs = [], []
    for array in sample.inputs:
        array = np.array(array, copy=True)          # a fresh copy per backend (in-place ops)
        floating = array.dtype.kind == "f"
        if floating and cast_to is not None:
            array = array.astype(cast_to)
        requires_grad = floating and differentiable
        if layout == "transposed" and array.ndim >= 2:
            perm = _swap_last(array.ndim)
            leaf = Tensor(np.ascontiguousarray(array.transpose(perm)), requires_grad=requires_grad,
                          dtype=array.dtype, backend=backend)
            inputs.append(call("transpose", leaf, axes=perm))
        else:
            leaf = Tensor(array, requires_grad=requires_grad, dtype=array.dtype, backend=backend)
            inputs.append(leaf)
        leaves.append(leaf)
    return leaves, inputs


def _execute(backend, op: Op, sample: Sample, cast_to, upstream, layout: str = "contiguous") -> _Run:
    leaves, inputs = _make_inputs(backend, sample, cast_to, op.differentiable, layout)
    outputs = _outputs(call(op.name, *inputs, **sample.attrs))
    values = [o.numpy().copy() for o in outputs]
    grads = [None] * len(inputs)
    recorded = [bool(o.requires_grad) for o in outputs]
    if op.differentiable and upstream is not None and all(recorded):
        loss = None
        for out, g in zip(outputs, upstream):
            term = (out * Tensor(g, dtype=out.dtype, backend=backend)).sum()
            loss = term if loss is None else loss + term
        loss.backward()
        for k, (leaf, x) in enumerate(zip(leaves, inputs)):
            if leaf.grad is not None:
                g = leaf.grad.numpy()
                grads[k] = (g if leaf is x else g.transpose(_swap_last(g.ndim))).copy()
    return _Run(values, grads, [x.numpy() for x in inputs], recorded)


def _check_sample(backend, op: Op, sample: Sample, dtype, tolerance: Tolerance, rng, where: str) -> None:
    oracle = reference_backend()
    with no_grad():
        expected_dtypes = [o.numpy().dtype for o in _outputs(call(op.name, *_make_inputs(
            oracle, sample, None, False)[1], **sample.attrs))]
    reference_forward = _execute(oracle, op, sample, FLOAT64, None)
    upstream = None
    if op.differentiable:
        upstream = [rng.standard_normal(out.shape).astype(dtype).astype(FLOAT64)
                    for out in reference_forward.outputs]
    reference = _execute(oracle, op, sample, FLOAT64, upstream) if op.differentiable else reference_forward

    strided = not op.in_place and any(np.ndim(a) >= 2 for a in sample.inputs)
    for layout in LAYOUTS if strided else LAYOUTS[:1]:
        here = f"{where} ({dtype})" if layout == "contiguous" else f"{where} ({dtype}, {layout} inputs)"
        try:
            got = _execute(backend, op, sample, None, upstream, layout)
        except Exception as err:     # a missing kernel (BackendError) or a crashing one is a failure too
            raise AssertionError(f"{here}: running the op failed: {type(err).__name__}: {err}") from err
        _compare(got, reference, expected_dtypes, op, sample, tolerance, here)


def _compare(got: _Run, reference: _Run, expected_dtypes, op: Op, sample: Sample, tolerance, where: str) -> None:
    if len(got.outputs) != len(reference.outputs):
        raise AssertionError(f"{where}: {len(got.outputs)} output(s), the reference gives {len(reference.outputs)}")
    for k, (out, want, want_dtype) in enumerate(zip(got.outputs, reference.outputs, expected_dtypes)):
        label = "output" if len(got.outputs) == 1 else f"output {k}"
        if out.dtype != want_dtype:
            raise AssertionError(f"{where}: {label} has dtype {out.dtype}, expected {want_dtype}")
        _assert_close(out, want, tolerance, f"{where}: {label}")

    if op.differentiable:
        if not all(got.requires_grad):
            raise AssertionError(f"{where}: the op is differentiable but the backend's kernel recorded no "
                                 f"backward (it returned backprop=None)")
        for k, (g, want) in enumerate(zip(got.grads, reference.grads)):
            if want is None and g is None:
                continue
            if g is None:
                raise AssertionError(f"{where}: input {k} received no gradient; the reference gives one "
                                     f"(max abs {np.max(np.abs(want)):.3e})")
            if want is None:
                raise AssertionError(f"{where}: input {k} received a gradient; the reference gives none")
            input_dtype = np.asarray(sample.inputs[k]).dtype
            if g.dtype != input_dtype:
                raise AssertionError(f"{where}: gradient of input {k} has dtype {g.dtype}, expected {input_dtype}")
            _assert_close(g, want, tolerance, f"{where}: gradient of input {k}")

    if not op.in_place:
        for k, (after, before) in enumerate(zip(got.inputs_after, sample.inputs)):
            if not np.array_equal(after, np.asarray(before), equal_nan=True):
                raise AssertionError(f"{where}: input {k} was modified by the op, which is not in_place")


def _outputs(result) -> list:
    return list(result) if isinstance(result, tuple) else [result]


def _assert_close(got: np.ndarray, want: np.ndarray, tolerance: Tolerance, what: str) -> None:
    got = np.asarray(got)
    want = np.asarray(want)
    if got.shape != want.shape:
        raise AssertionError(f"{what} has shape {got.shape}, the reference {want.shape}")
    a, b = np.atleast_1d(got.astype(np.float64)), np.atleast_1d(want.astype(np.float64))
    finite = np.isfinite(b)
    scale = max(1.0, float(np.max(np.abs(b[finite]), initial=0.0)))
    diff = np.abs(a - b)
    diff[(a == b) | (np.isnan(a) & np.isnan(b))] = 0.0      # equal infinities, NaN where NaN expected
    diff[np.isnan(diff)] = np.inf
    allowed = tolerance.atol * scale + tolerance.rtol * np.abs(b)
    excess = diff - allowed
    if not np.any(excess > 0):
        return
    worst = np.unravel_index(int(np.argmax(excess)), excess.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(diff == 0, 0.0, diff / np.abs(b))
    raise AssertionError(
        f"{what} differs from the float64 reference: max abs error {np.max(diff):.3e}, "
        f"max rel error {np.max(rel):.3e} (rtol {tolerance.rtol:g}, atol {tolerance.atol:g}·{scale:.3g}); "
        f"worst at index {tuple(int(i) for i in worst) if got.ndim else ()}: got {a[worst]:.9g}, "
        f"expected {b[worst]:.9g}; "
        f"{int(np.sum(excess > 0))} of {excess.size} element(s) out of tolerance")


# ---- gradient checks -------------------------------------------------------------------------------
def gradcheck_op(backend, op_name: str, threshold: float = 1e-7, seed: int | None = None) -> list[GradcheckResult]:
    """`lamina.gradcheck` of every float64 sample of a differentiable op on `backend`.

    Checks d/dx of (op(*inputs) * G).sum() for a random G and every floating input; samples whose
    output is not float64 (a cast down) cannot be checked to 1e-7 and are skipped.
    """
    backend = resolve_backend(backend)
    op = get_op(op_name)
    if not op.differentiable:
        raise LaminaError(f"gradcheck_op: op {op_name!r} is not differentiable")
    rng = np.random.default_rng(_seed_for(op_name) if seed is None else seed)
    results = []
    for index, sample in enumerate(op.samples(rng, FLOAT64)):
        where = f"backend {backend.name!r}, op {op_name!r}, sample {index}"
        tensors = [Tensor(np.array(a, copy=True), dtype=np.asarray(a).dtype, backend=backend) for a in sample.inputs]
        checked = {f"input {k}": t for k, t in enumerate(tensors) if t.dtype == FLOAT64}
        try:
            with no_grad():
                out = call(op.name, *tensors, **sample.attrs)
            if out.dtype != FLOAT64 or not checked:
                continue
            upstream = Tensor(rng.standard_normal(out.shape), dtype=FLOAT64, backend=backend)
            result = gradcheck(lambda: (call(op.name, *tensors, **sample.attrs) * upstream).sum(), checked,
                               threshold=threshold)
        except Exception as err:
            raise AssertionError(f"{where}: gradient check could not run: {type(err).__name__}: {err}") from err
        if not result.passed:
            raise AssertionError(f"{where}: {result}")
        results.append(result)
    return results
