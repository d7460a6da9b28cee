"""The CUDA backend's fused convolution, pooling and batch-norm kernels (lamina_cuda.kernels.convolution
and .normalization): forward and backward parity with torch.nn.functional (NHWC <-> NCHW, HWIO <-> OIHW)
and with the CPU backend's kernels over strides, paddings and odd sizes; that the fused kernels, not
the composite defaults, ran; in-place running statistics; skipped gradients (needs_input_grad);
inputs left to the defaults (NotImplemented); float64 gradient checks of cases beyond the op samples.

The conformance suite and the gradient checks of the op samples run in tests/test_cuda_backend.py.
Without a GPU these run in Numba's CUDA simulator (tests/conftest.py), so the shapes are tiny."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina as lm
from lamina.backend import load_backend
from lamina.ops import call
from lamina.tensor import Tensor
from lamina_cuda import device
from lamina_cuda.kernels import convolution, normalization
from lamina_cuda.kernels.geometry import device_vector
from lamina_cuda.kernels.matmul import Tiling, product, tiling_for
from test_convolution import nchw, nhwc, torch_pads      # the NHWC <-> NCHW helpers of the CPU kernels' tests

TOLERANCE = {"float64": 1e-9, "float32": 1e-4}
FUSED = ("conv2d", "max_pool2d", "avg_pool2d", "global_avg_pool2d", "batch_norm")


@pytest.fixture
def cuda():
    return load_backend("cuda")


def run(backend, op, arrays, dtype, upstream, requires_grad=None, **attrs):
    """(output, gradient of each input or None) of `op` on `backend` (a name or instance) under `upstream`."""
    backend = load_backend(backend) if isinstance(backend, str) else backend
    requires_grad = requires_grad or (True,) * len(arrays)
    tensors = [Tensor(np.array(a), dtype=dtype, backend=backend, requires_grad=r)
               for a, r in zip(arrays, requires_grad)]
    out = call(op, *tensors, **attrs)
    out.backward(Tensor(upstream, dtype=dtype, backend=backend))
    return out.numpy(), [None if t.grad is None else t.grad.numpy() for t in tensors]


def close(got, want, dtype):
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, np.abs(want).max()))


def distinct(rng, shape):
    """Values 0.05 apart in random order: no ties, so the max's gradient is well defined."""
    size = int(np.prod(shape))
    return rng.permutation(size).reshape(shape) * 0.05 - size * 0.025


# ---- conv2d ------------------------------------------------------------------------------------------
CONV_CASES = [  # (m, n_H, n_W, C_prev, C, f, stride, padding)
    (2, 5, 5, 1, 2, 3, 1, "valid"), (1, 5, 6, 2, 3, 3, 1, "same"), (2, 6, 5, 2, 2, 4, 1, "same"),
    (3, 7, 6, 3, 2, 3, 2, "same"), (1, 7, 5, 2, 3, 5, 3, "same"), (2, 5, 7, 2, 2, 2, 2, 1),
    (1, 6, 6, 3, 3, 3, 3, 2), (2, 4, 5, 3, 4, 1, 1, "valid"), (2, 5, 4, 2, 2, 1, 2, 0),
    (1, 7, 8, 2, 2, 2, 3, "valid"),     # stride > f skips pixels
    (1, 4, 4, 2, 2, 2, 1, 2), (2, 3, 3, 2, 2, 1, 1, 1),    # padding ≥ f: dx's convolution pads g by f − 1 − p < 0
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CONV_CASES, ids=str)
def test_conv2d_matches_torch_and_the_cpu_kernel(case, dtype):
    m, n_H, n_W, c_prev, c, f, stride, padding = case
    rng = np.random.default_rng(sum(case[:7]))
    x, W, b = rng.standard_normal((m, n_H, n_W, c_prev)), rng.standard_normal((f, f, c_prev, c)), rng.standard_normal(c)
    with lm.no_grad():
        z_shape = call("conv2d", Tensor(x, backend=load_backend("cpu")), Tensor(W, backend=load_backend("cpu")),
                       stride=stride, padding=padding).shape
    g = rng.standard_normal(z_shape)
    got, grads = run("cuda", "conv2d", (x, W, b), dtype, g, stride=stride, padding=padding)

    xt, Wt, bt = nchw(x), torch.tensor(W).permute(3, 2, 0, 1).requires_grad_(), torch.tensor(b).requires_grad_()
    zt = TF.conv2d(TF.pad(xt, torch_pads(x.shape, f, stride, padding)), Wt, bt, stride=stride)
    zt.backward(torch.tensor(g).permute(0, 3, 1, 2))
    close(got, nhwc(zt), dtype)
    close(grads[0], nhwc(xt.grad), dtype)
    close(grads[1], Wt.grad.permute(2, 3, 1, 0).numpy(), dtype)
    close(grads[2], bt.grad.numpy(), dtype)

    want, want_grads = run("cpu", "conv2d", (x, W, b), dtype, g, stride=stride, padding=padding)
    close(got, want, dtype)
    for k in range(3):
        close(grads[k], want_grads[k], dtype)


def test_the_fused_kernels_run_not_the_composite_defaults(cuda, monkeypatch):
    assert all(name in cuda.kernels for name in FUSED)
    calls = []
    for name in ("product", "col2im", "max_pool_forward", "max_pool_backward", "avg_pool_forward",
                 "avg_pool_backward", "global_avg_pool_forward", "global_avg_pool_backward"):
        original = getattr(convolution, name)
        monkeypatch.setattr(convolution, name,
                            lambda *a, _name=name, _f=original, **k: calls.append(_name) or _f(*a, **k))
    original_bn = normalization.batch_norm_forward
    monkeypatch.setattr(normalization, "batch_norm_forward",
                        lambda *a, **k: calls.append("batch_norm_forward") or original_bn(*a, **k))
    monkeypatch.setattr("lamina.ops.convolution._windows", _refuse)     # every pooling/conv default gathers windows
    rng = np.random.default_rng(0)
    x = distinct(rng, (1, 4, 4, 2))
    run(cuda, "conv2d", (x, rng.standard_normal((3, 3, 2, 2))), "float64", rng.standard_normal((1, 4, 4, 2)),
        padding="same")
    run(cuda, "conv2d", (x, rng.standard_normal((3, 3, 2, 2))), "float64", rng.standard_normal((1, 2, 2, 2)),
        stride=2, padding="same")
    run(cuda, "max_pool2d", (x,), "float64", rng.standard_normal((1, 2, 2, 2)), f=2)
    run(cuda, "avg_pool2d", (x,), "float64", rng.standard_normal((1, 2, 2, 2)), f=2)
    run(cuda, "global_avg_pool2d", (x,), "float64", rng.standard_normal((1, 2)))
    run(cuda, "batch_norm", (x, np.ones(2), np.zeros(2), np.zeros(2), np.ones(2)), "float64",
        rng.standard_normal(x.shape), requires_grad=(True, True, True, False, False), training=True)
    # stride 1: three implicit products (z, dx, dW); stride 2: dx goes through col2im
    assert calls == ["product", "product", "product", "product", "product", "col2im", "max_pool_forward", "max_pool_backward", "avg_pool_forward",
                     "avg_pool_backward", "global_avg_pool_forward", "global_avg_pool_backward", "batch_norm_forward"]


def _refuse(*args, **kwargs):
    raise AssertionError("the composite default ran instead of the fused CUDA kernel")


def _count_calls(monkeypatch, module, names):
    calls = {name: 0 for name in names}
    for name in names:
        def spy(*args, _name=name, _original=getattr(module, name), **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)
        monkeypatch.setattr(module, name, spy)
    return calls


@pytest.mark.parametrize("requires_grad", [(False, True, False), (True, False, False), (False, False, True)])
def test_conv2d_skips_the_gradients_nobody_needs(cuda, monkeypatch, requires_grad):
    rng = np.random.default_rng(1)
    x, W, b = rng.standard_normal((2, 5, 5, 2)), rng.standard_normal((3, 3, 2, 3)), rng.standard_normal(3)
    g = rng.standard_normal((2, 3, 3, 3))
    _, want = run("cpu", "conv2d", (x, W, b), "float64", g)
    calls = _count_calls(monkeypatch, convolution, ("product", "col2im"))
    sums = _count_calls(monkeypatch, convolution, ("column_sums",))
    _, grads = run(cuda, "conv2d", (x, W, b), "float64", g, requires_grad=requires_grad)
    for k, needed in enumerate(requires_grad):
        if needed:
            close(grads[k], want[k], "float64")
        else:
            assert grads[k] is None
    # one implicit product for z, one for dW and one for dx (stride 1: no col2im), each only if needed
    assert calls == {"product": 1 + requires_grad[1] + requires_grad[0], "col2im": 0}
    assert sums == {"column_sums": int(requires_grad[2])}


@pytest.mark.parametrize("groups", [1, 2, 6])
def test_conv2d_weight_gradient_summed_over_image_groups(cuda, monkeypatch, groups):
    """dW is computed per group of images (a batched product) and summed: every split gives the same dW."""
    tiling = tiling_for(np.float64)
    blocks_per_group = math.ceil(18 / tiling.BM) * math.ceil(2 / tiling.BN)     # 3·3·2 rows of dW, 2 columns
    monkeypatch.setattr(convolution, "DW_TARGET_BLOCKS", groups * blocks_per_group)
    rng = np.random.default_rng(2)
    x, W = rng.standard_normal((6, 4, 4, 2)), rng.standard_normal((3, 3, 2, 2))
    g = rng.standard_normal((6, 2, 2, 2))
    assert convolution._dw_groups(6, 18, 2, np.float64) == groups
    _, grads = run(cuda, "conv2d", (x, W), "float64", g)
    _, want = run("cpu", "conv2d", (x, W), "float64", g)
    close(grads[1], want[1], "float64")
    close(grads[0], want[0], "float64")


# ---- the implicit product: columns read from the image ---------------------------------------------------
IMPLICIT_CASES = [  # (m, n_H, n_W, C, f, stride, (top, bottom, left, right))
    (2, 5, 6, 1, 3, 1, (1, 1, 1, 1)),      # C = 1: the window position carries through c, b and a in one slice
    (1, 6, 5, 3, 3, 2, (0, 1, 1, 0)),      # asymmetric padding ("same" with stride 2)
    (2, 4, 5, 10, 2, 1, (0, 0, 0, 0)),     # C > BK
    (3, 5, 5, 2, 1, 2, (0, 0, 0, 0)),      # a 1×1 window that skips pixels (not a plain product)
    (4, 7, 3, 2, 3, 2, (2, 2, 1, 1)),      # ow < BK: a pixel carries through w and h, and into the next image
]
IMPLICIT_TILINGS = [Tiling(16, 16, 8, 4, 4), Tiling(32, 32, 8, 4, 4)]   # 2 and 8 rows between a thread's loads


def columns(x, f, stride, pads):
    """im2col on the host (the oracle): (m·oh·ow, f·f·C), row (i·oh + h)·ow + w, column (a·f + b)·C + c."""
    top, bottom, left, right = pads
    padded = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    m, H, W, C = padded.shape
    oh, ow = (H - f) // stride + 1, (W - f) // stride + 1
    cols = np.empty((m, oh, ow, f, f, C), x.dtype)
    for a in range(f):
        for b in range(f):
            cols[:, :, :, a, b, :] = padded[:, a:a + stride * (oh - 1) + 1:stride, b:b + stride * (ow - 1) + 1:stride]
    return cols.reshape(m * oh * ow, f * f * C), (oh, ow)


@pytest.mark.parametrize("tiling", IMPLICIT_TILINGS, ids=str)
@pytest.mark.parametrize("case", IMPLICIT_CASES, ids=str)
def test_the_implicit_product_reads_the_columns_from_the_image(case, tiling):
    """Z = im2col(x)·W₂ + b and, per group of images, im2col(x)ᵀ·G, read by `im2col_loader`, against the
    columns built on the host; partial tiles on both axes, every carry of the loader's running indices."""
    m, n_H, n_W, C, f, stride, pads = case
    rng = np.random.default_rng(sum(case[:6]))
    x = rng.standard_normal((m, n_H, n_W, C))
    cols, out_hw = columns(x, f, stride, pads)
    rows, width = cols.shape
    W2, b = rng.standard_normal((width, 3)), rng.standard_normal(3)
    geometry = convolution._geometry(x.shape, f, stride, pads[0], pads[2], out_hw)
    x_d = device.to_device(x.reshape(-1))
    z = device.empty((rows, 3), np.float64)
    product(x_d, device.to_device(W2.reshape(-1)), z, width, device_vector((0,)), device_vector((0,)),
            tiling=tiling, bias=device.to_device(b), a_loader=convolution.im2col_loader, geometry=geometry)
    np.testing.assert_allclose(z.copy_to_host(), cols @ W2 + b, rtol=1e-12, atol=1e-12)

    groups = m // 2 if m % 2 == 0 else m                        # groups of two images (or one), summed after
    per_group = rows // groups
    G = rng.standard_normal((rows, 3))
    partial = device.empty((groups, width, 3), np.float64)
    product(x_d, device.to_device(G.reshape(-1)), partial, per_group,
            device_vector(tuple(k * per_group for k in range(groups))),
            device_vector(tuple(k * per_group * 3 for k in range(groups))), trans_a=True, tiling=tiling,
            a_loader=convolution.im2col_loader, geometry=geometry)
    want = np.stack([cols[k * per_group:(k + 1) * per_group].T @ G[k * per_group:(k + 1) * per_group]
                     for k in range(groups)])
    np.testing.assert_allclose(partial.copy_to_host(), want, rtol=1e-12, atol=1e-12)


# ---- pooling -----------------------------------------------------------------------------------------
POOL_CASES = [  # (m, n_H, n_W, C, f, stride, padding)
    (2, 4, 4, 2, 2, None, 0), (1, 5, 5, 3, 3, 1, 1), (2, 7, 6, 1, 3, 2, 0), (1, 5, 7, 2, 2, 3, "same"),
    (1, 6, 5, 2, 3, 1, "same"), (1, 7, 7, 2, 4, 2, 2), (2, 5, 6, 1, 3, 3, "valid"),
]


def torch_pool(op, x, g, f, stride, padding):
    stride = f if stride is None else stride
    xt = nchw(x)
    padded = TF.pad(xt, torch_pads(x.shape, f, stride, padding), value=-np.inf if op == "max_pool2d" else 0.0)
    pool = TF.max_pool2d if op == "max_pool2d" else TF.avg_pool2d
    out = pool(padded, f, stride)
    out.backward(torch.tensor(g).permute(0, 3, 1, 2))
    return nhwc(out), nhwc(xt.grad)


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", POOL_CASES, ids=str)
def test_pooling_matches_torch_and_the_cpu_kernel(op, case, dtype):
    m, n_H, n_W, c, f, stride, padding = case
    rng = np.random.default_rng(n_H * n_W + f)
    x = distinct(rng, (m, n_H, n_W, c))
    with lm.no_grad():
        out_shape = call(op, Tensor(x, backend=load_backend("cpu")), f=f, stride=stride, padding=padding).shape
    g = rng.standard_normal(out_shape)
    got, (dx,) = run("cuda", op, (x,), dtype, g, f=f, stride=stride, padding=padding)
    want, want_dx = torch_pool(op, x, g, f, stride, padding)
    close(got, want, dtype)
    close(dx, want_dx, dtype)
    cpu, (cpu_dx,) = run("cpu", op, (x,), dtype, g, f=f, stride=stride, padding=padding)
    close(got, cpu, dtype)
    close(dx, cpu_dx, dtype)


def test_max_pool_gives_a_tie_to_the_first_maximum_as_torch_and_the_cpu_kernel():
    x = np.zeros((1, 4, 4, 1))
    x[0, 1:3, 1:3, 0] = 1.0                  # overlapping windows (stride 1) share the tied maxima
    g = np.arange(1.0, 10.0).reshape(1, 3, 3, 1)
    _, (dx,) = run("cuda", "max_pool2d", (x,), "float64", g, f=2, stride=1)
    _, want = torch_pool("max_pool2d", x, g, 2, 1, 0)
    np.testing.assert_array_equal(dx, want)
    _, (cpu_dx,) = run("cpu", "max_pool2d", (x,), "float64", g, f=2, stride=1)
    np.testing.assert_array_equal(dx, cpu_dx)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_global_avg_pool_matches_torch(dtype):
    rng = np.random.default_rng(3)
    x, g = rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((2, 4))
    got, (dx,) = run("cuda", "global_avg_pool2d", (x,), dtype, g)
    xt = torch.tensor(x).requires_grad_()
    out = xt.mean(dim=(1, 2))
    out.backward(torch.tensor(g))
    close(got, out.detach().numpy(), dtype)
    close(dx, xt.grad.numpy(), dtype)


# ---- batch normalization -----------------------------------------------------------------------------
BN_SHAPES = [(6, 3), (2, 3, 3, 4), (70, 2), (1, 2, 3, 5)]     # (70, 2): more than one chunk of CHUNK_ROWS rows


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", BN_SHAPES, ids=str)
def test_batch_norm_matches_torch_and_updates_running_stats_in_place(shape, dtype, training, cuda):
    rng = np.random.default_rng(len(shape) * 10 + shape[-1])
    c = shape[-1]
    x = rng.standard_normal(shape) * rng.uniform(0.5, 2.0, c) + 3.0
    gamma, beta = rng.uniform(0.5, 1.5, c), rng.standard_normal(c) * 0.1
    mean0, var0 = rng.standard_normal(c) * 0.1, rng.uniform(0.5, 1.5, c)
    g = rng.standard_normal(shape)
    tensors = [Tensor(a, dtype=dtype, backend=cuda, requires_grad=k < 3) for k, a in
               enumerate((x, gamma, beta, mean0, var0))]
    stats = (tensors[3].data, tensors[4].data)
    out = call("batch_norm", *tensors, training=training, momentum=0.9, epsilon=1e-5)
    out.backward(Tensor(g, dtype=dtype, backend=cuda))
    assert (tensors[3].data, tensors[4].data) == stats            # the same device arrays, updated in place

    xt, gt, bt = (torch.tensor(a).requires_grad_() for a in (x.reshape(-1, c), gamma, beta))
    rm, rv = torch.tensor(mean0), torch.tensor(var0)
    want = TF.batch_norm(xt, rm, rv, gt, bt, training=training, momentum=0.1, eps=1e-5)
    want.backward(torch.tensor(g.reshape(-1, c)))
    close(out.numpy(), want.detach().numpy().reshape(shape), dtype)
    close(tensors[0].grad.numpy(), xt.grad.numpy().reshape(shape), dtype)
    close(tensors[1].grad.numpy(), gt.grad.numpy(), dtype)
    close(tensors[2].grad.numpy(), bt.grad.numpy(), dtype)
    close(stats[0].copy_to_host(), rm.numpy(), dtype)
    close(stats[1].copy_to_host(), rv.numpy(), dtype)


def test_batch_norm_inference_gives_the_running_stats_their_gradients_as_the_cpu_kernel(cuda):
    rng = np.random.default_rng(4)
    arrays = (rng.standard_normal((5, 3)), rng.uniform(0.5, 1.5, 3), rng.standard_normal(3), rng.standard_normal(3),
              rng.uniform(0.5, 1.5, 3))
    g = rng.standard_normal((5, 3))
    got, grads = run(cuda, "batch_norm", arrays, "float64", g, training=False)
    want, want_grads = run("cpu", "batch_norm", arrays, "float64", g, training=False)
    close(got, want, "float64")
    for k in range(5):
        close(grads[k], want_grads[k], "float64")


def test_batch_norm_skips_the_gradients_nobody_needs(cuda):
    rng = np.random.default_rng(5)
    arrays = [cuda.asarray(a, np.float64) for a in (rng.standard_normal((6, 2)), np.ones(2), np.zeros(2),
                                                    np.zeros(2), np.ones(2))]
    out, backprop = cuda.kernels["batch_norm"](*arrays, training=True,
                                               needs_input_grad=(False, True, False, False, False))
    grads = backprop(cuda.asarray(rng.standard_normal((6, 2)), np.float64))
    assert grads[0] is None and grads[1] is not None and grads[2:] == (None, None, None)


# ---- inputs left to the composite defaults -----------------------------------------------------------
def test_kernels_decline_what_they_do_not_handle(cuda, monkeypatch):
    f64 = lambda *s: cuda.asarray(np.ones(s), np.float64)  # noqa: E731
    f32 = lambda *s: cuda.asarray(np.ones(s), np.float32)  # noqa: E731
    assert cuda.kernels["conv2d"](f64(1, 4, 4, 2), f32(3, 3, 2, 2)) is NotImplemented        # mixed dtypes
    assert cuda.kernels["conv2d"](f64(0, 4, 4, 2), f64(3, 3, 2, 2)) is NotImplemented        # empty batch
    monkeypatch.setattr(convolution, "MAX_PIXELS", 31)      # past the implicit loader's 32-bit pixel index
    assert cuda.kernels["conv2d"](f64(2, 4, 4, 2), f64(3, 3, 2, 2)) is NotImplemented          # 32 pixels in
    assert cuda.kernels["conv2d"](f64(2, 4, 2, 2), f64(1, 1, 2, 2), padding=2) is NotImplemented   # 96 out
    assert cuda.kernels["conv2d"](f64(1, 4, 4, 2), f64(3, 3, 2, 2)) is not NotImplemented
    assert cuda.kernels["max_pool2d"](f64(1, 4, 4, 1), f=2, padding=2) is NotImplemented      # padding > f/2
    assert cuda.kernels["avg_pool2d"](cuda.asarray(np.ones((1, 4, 4, 1)), np.int64), f=2) is NotImplemented
    assert cuda.kernels["batch_norm"](f64(4, 3, 2), *(f64(3) for _ in range(4)), training=True,
                                      axis=1) is NotImplemented                               # not the last axis


def test_batch_norm_over_a_middle_axis_falls_back_to_the_default(cuda):
    rng = np.random.default_rng(6)
    arrays = (rng.standard_normal((4, 3, 2)), np.ones(3), np.zeros(3), np.zeros(3), np.ones(3))
    g = rng.standard_normal((4, 3, 2))
    got, grads = run(cuda, "batch_norm", arrays, "float64", g, requires_grad=(True, True, True, False, False),
                     training=True, axis=1)
    want, want_grads = run("cpu", "batch_norm", arrays, "float64", g, requires_grad=(True, True, True, False, False),
                           training=True, axis=1)
    close(got, want, "float64")
    close(grads[0], want_grads[0], "float64")


# ---- float64 gradient checks beyond the op samples ---------------------------------------------------
@pytest.mark.parametrize("op, shapes, attrs", [
    pytest.param("conv2d", [(2, 5, 4, 2), (3, 3, 2, 2), (2,)], {"stride": 2, "padding": "same"},
                 marks=pytest.mark.simulator_slow),
    ("conv2d", [(3, 4, 4, 1), (2, 2, 1, 3)], {"stride": 1, "padding": 1}),
    ("avg_pool2d", [(1, 5, 6, 2)], {"f": 3, "stride": 2, "padding": 1}),
    ("global_avg_pool2d", [(2, 3, 2, 3)], {}),
    ("batch_norm", [(7, 3), (3,), (3,)], {"training": True}),
    ("batch_norm", [(2, 2, 3), (3,), (3,), (3,), (3,)], {"training": False}),
], ids=lambda v: str(v) if not isinstance(v, list) else "")
def test_gradcheck(op, shapes, attrs, cuda):
    rng = np.random.default_rng(7)
    tensors = [Tensor(rng.standard_normal(s) + (1.5 if op == "batch_norm" and k == 4 else 0.0), dtype="float64",
                      backend=cuda) for k, s in enumerate(shapes)]
    extra = []
    if op == "batch_norm" and len(tensors) == 3:     # running statistics that gradcheck does not vary
        extra = [Tensor(np.zeros(3), dtype="float64", backend=cuda), Tensor(np.ones(3), dtype="float64", backend=cuda)]
    with lm.no_grad():
        out_shape = call(op, *tensors, *extra, **attrs).shape
    upstream = Tensor(rng.standard_normal(out_shape), dtype="float64", backend=cuda)
    result = lm.gradcheck(lambda *ts: (call(op, *ts, *extra, **attrs) * upstream).sum(), tensors)
    assert result.passed and result.relative_difference < 1e-7, result


@pytest.mark.parametrize("rows", [1, 64, 65, 4200])     # one chunk, one full chunk, two, more chunks than CHUNK_ROWS
def test_column_sums_of_any_number_of_rows(rows):
    rng = np.random.default_rng(rows)
    a, b, center = rng.standard_normal((rows, 3)), rng.standard_normal((rows, 3)), rng.standard_normal(3)
    got = normalization.column_sums(device.to_device(a)).copy_to_host()
    np.testing.assert_allclose(got, a.sum(axis=0), rtol=1e-12, atol=1e-12)
    chunks = normalization._chunk_sums(normalization._GRAD_SUMS, device.to_device(a), device.to_device(b),
                                       device.to_device(center)).copy_to_host()
    assert chunks.shape[0] <= normalization.CHUNK_ROWS
    np.testing.assert_allclose(chunks.sum(axis=0), [a.sum(axis=0), (a * (b - center)).sum(axis=0)], rtol=1e-12,
                               atol=1e-12)


@pytest.mark.parametrize("rows, chunk_rows", [(2, 64), (7, 64), (5, 2), (11, 2), (70, 3)],
                         ids=["two-rows", "one-chunk", "one-merge-level", "two-merge-levels", "three-merge-levels"])
def test_batch_norm_statistics_merge_the_chunks_moments(monkeypatch, rows, chunk_rows):
    """μ and σ² from one pass: Welford per chunk of CHUNK_ROWS rows, Chan's merge of the chunks, in passes of
    CHUNK_ROWS chunks while there are more; the running averages take the unbiased σ²."""
    monkeypatch.setattr(normalization, "CHUNK_ROWS", chunk_rows)
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, 3)) * [1.0, 3.0, 0.5] + [0.0, -2.0, 5.0]
    running_mean, running_var = device.to_device(np.full(3, 0.5)), device.to_device(np.full(3, 2.0))
    out, mean, inv_std, _ = normalization.batch_norm_forward(
        device.to_device(x), device.to_device(np.ones(3)), device.to_device(np.zeros(3)), running_mean, running_var,
        True, 0.9, 1e-5)
    var = x.var(axis=0)
    np.testing.assert_allclose(mean.copy_to_host(), x.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(inv_std.copy_to_host(), 1 / np.sqrt(var + 1e-5), rtol=1e-10)
    np.testing.assert_allclose(out.copy_to_host(), (x - x.mean(axis=0)) / np.sqrt(var + 1e-5), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(running_mean.copy_to_host(), 0.9 * 0.5 + 0.1 * x.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(running_var.copy_to_host(), 0.9 * 2.0 + 0.1 * x.var(axis=0, ddof=1), rtol=1e-12)


def test_batch_norm_statistics_of_a_large_mean_keep_float32_accuracy(cuda):
    """x = 10⁴ + N(0, 1) in float32: Σx² − (Σx)²/N would lose σ² entirely (x² ≈ 10⁸, float32 resolves 8 there);
    the merged moments keep it, so the normalized output matches the float64 computation."""
    rng = np.random.default_rng(5)
    x = (1e4 + rng.standard_normal((300, 2))).astype(np.float32)
    t = Tensor(x, backend=cuda)
    out = call("batch_norm", t, *(Tensor(v, backend=cuda) for v in (np.ones(2, np.float32), np.zeros(2, np.float32),
                                                                     np.zeros(2, np.float32), np.ones(2, np.float32))),
               training=True)
    x64 = x.astype(np.float64)
    want = (x64 - x64.mean(axis=0)) / np.sqrt(x64.var(axis=0) + 1e-5)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-3, atol=2e-3)


# ---- the layers on the fused kernels -------------------------------------------------------------
@pytest.mark.simulator_slow
def test_a_small_cnn_on_the_fused_kernels_passes_run_layer_test():
    from lamina.testing import run_layer_test

    def build():
        return lm.nn.Sequential([lm.nn.Conv2D(2, 3, 3, stride=1, padding="same"), lm.nn.BatchNorm(3),
                                 lm.nn.MaxPool2D(2), lm.nn.AvgPool2D(3, stride=1, padding=1), lm.nn.GlobalAvgPool2D()])

    report = run_layer_test(build, (1, 4, 4, 2), backend="cuda", expected_output_shape=(1, 3))
    # the convolution's W and b, BatchNorm's γ, β and running μ, σ²
    assert report.gradcheck.passed and report.num_parameters == 3 * 3 * 2 * 3 + 3 + 4 * 3
