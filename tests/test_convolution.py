"""Convolution and pooling (§4.1–4.4): parity with torch.nn.functional.conv2d/max_pool2d/avg_pool2d
(NHWC <-> NCHW, HWIO <-> OIHW) forward and backward, for the CPU kernels and for the composite defaults
(on the reference backend); float64 gradient checks; the seed's output-size formula; argument errors;
the layers' output shapes; a small LeNet-like network learning the digits."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina as lm
from lamina.backend import load_backend
from lamina.ops import call
from lamina.ops.convolution import axis_padding
from lamina.tensor import Tensor
from lamina.testing import reference_backend

TOLERANCE = {"float64": 1e-6, "float32": 1e-4}


@pytest.fixture(params=["cpu", "reference"])
def backend(request):
    """The CPU backend's fused kernels, or the reference backend, which runs the composite defaults."""
    return load_backend("cpu") if request.param == "cpu" else reference_backend()


def run(backend, op, arrays, dtype, upstream, **attrs):
    """(output, gradients of every input) of `op` on `backend` under the upstream gradient."""
    tensors = [Tensor(a, dtype=dtype, backend=backend, requires_grad=True) for a in arrays]
    out = call(op, *tensors, **attrs)
    (out * Tensor(upstream, dtype=dtype, backend=backend)).sum().backward()
    return out.numpy(), [t.grad.numpy() for t in tensors]


def torch_pads(shape, f, stride, padding):
    """F.pad's (left, right, top, bottom) for Lamina's padding rule (TensorFlow's 'same' may be asymmetric)."""
    (top, bottom), (left, right) = (axis_padding("test", n, f, stride, padding) for n in shape[1:3])
    return left, right, top, bottom


def nchw(a):
    return torch.tensor(a).permute(0, 3, 1, 2).requires_grad_()


def nhwc(t):
    return t.detach().permute(0, 2, 3, 1).numpy()


def close(got, want, dtype):
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, np.abs(want).max()))


CONV_CASES = [  # (n_H, n_W, C_prev, C, f, stride, padding)
    (6, 6, 1, 1, 3, 1, "valid"), (7, 7, 3, 4, 3, 1, "same"), (8, 6, 2, 3, 4, 1, "same"), (9, 8, 3, 2, 3, 2, "same"),
    (10, 7, 2, 5, 5, 3, "same"), (7, 9, 3, 2, 2, 2, 1), (8, 8, 4, 3, 3, 3, 2), (5, 6, 3, 6, 1, 1, "valid"),
    (6, 5, 2, 2, 4, 2, "valid"), (9, 10, 2, 3, 2, 3, "valid"),     # stride > f skips pixels
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "-".join(map(str, c)))
def test_conv2d_matches_torch(backend, case, dtype):
    H, W, c_prev, c, f, stride, padding = case
    rng = np.random.default_rng(sum(case[:6]))
    x, w, b = rng.standard_normal((3, H, W, c_prev)), rng.standard_normal((f, f, c_prev, c)), rng.standard_normal(c)
    check_conv2d_against_torch(backend, x, w, b, stride, padding, dtype, rng)


def check_conv2d_against_torch(backend, x, w, b, stride, padding, dtype, rng):
    """conv2d's output and the gradients of x, w and b equal torch's (padding as Lamina's rule gives it)."""
    f = w.shape[0]
    x, w, b = (a.astype(dtype) for a in (x, w, b))
    xt, wt, bt = nchw(x), torch.tensor(w).permute(3, 2, 0, 1).detach().requires_grad_(), torch.tensor(b,
                                                                                              requires_grad=True)
    want = TF.conv2d(TF.pad(xt, torch_pads(x.shape, f, stride, padding)), wt, bt, stride=stride)
    upstream = rng.standard_normal(nhwc(want).shape).astype(dtype)
    want.backward(torch.tensor(upstream).permute(0, 3, 1, 2))
    out, (dx, dw, db) = run(backend, "conv2d", (x, w, b), dtype, upstream, stride=stride, padding=padding)
    assert out.dtype == np.dtype(dtype) and dx.dtype == np.dtype(dtype)
    close(out, nhwc(want), dtype)
    close(dx, nhwc(xt.grad), dtype)
    close(dw, wt.grad.permute(2, 3, 1, 0).numpy(), dtype)
    close(db, bt.grad.numpy(), dtype)


POOL_CASES = [  # (n_H, n_W, C, f, stride, padding)
    (4, 4, 2, 2, None, 0), (7, 7, 3, 3, 2, 0), (6, 5, 2, 3, 1, 1), (9, 8, 1, 3, 3, 1), (8, 7, 3, 2, 1, 0),
    (5, 6, 2, 4, 2, 2), (7, 6, 2, 3, 2, "same"), (8, 9, 2, 2, 3, 0),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("case", POOL_CASES, ids=lambda c: "-".join(map(str, c)))
def test_pooling_matches_torch(backend, case, kind, dtype):
    H, W, c, f, stride, padding = case
    rng = np.random.default_rng(H * W + c + f)
    x = (rng.permutation(2 * H * W * c).reshape(2, H, W, c) * 0.01 - H * W * c * 0.01).astype(dtype)  # no ties
    xt = nchw(x)
    s = f if stride is None else stride
    torch_op = TF.max_pool2d if kind == "max" else TF.avg_pool2d
    if padding == "same":     # may be asymmetric (here (0, 1) on the width): pad first, as the padding counts
        pads = torch_pads(x.shape, f, s, padding)
        want = torch_op(TF.pad(xt, pads, value=-np.inf if kind == "max" else 0.0), f, s)
    else:
        want = torch_op(xt, f, s, padding)
    upstream = rng.standard_normal(nhwc(want).shape).astype(dtype)
    want.backward(torch.tensor(upstream).permute(0, 3, 1, 2))
    out, (dx,) = run(backend, f"{kind}_pool2d", (x,), dtype, upstream, f=f, stride=stride, padding=padding)
    close(out, nhwc(want), dtype)
    close(dx, nhwc(xt.grad), dtype)


def test_global_avg_pool_matches_torch(backend):
    x = np.random.default_rng(1).standard_normal((2, 5, 3, 4))
    xt = nchw(x)
    want = TF.adaptive_avg_pool2d(xt, 1).reshape(2, 4)
    want.backward(torch.ones_like(want))
    out, (dx,) = run(backend, "global_avg_pool2d", (x,), "float64", np.ones((2, 4)))
    close(out, want.detach().numpy(), "float64")
    close(dx, nhwc(xt.grad), "float64")


@pytest.mark.parametrize("op, attrs", [("conv2d", {}), ("max_pool2d", {"f": 2}), ("avg_pool2d", {"f": 2})])
def test_cpu_kernels_decline_other_dtypes_and_the_default_runs(op, attrs):
    cpu = load_backend("cpu")
    arrays = [np.ones((1, 4, 4, 2), np.float16)] + ([np.ones((2, 2, 2, 3), np.float16)] if op == "conv2d" else [])
    assert cpu.kernels[op](*arrays, **attrs) is NotImplemented
    assert cpu.kernels[op](*[a.astype(np.float32) for a in arrays], **attrs) is not NotImplemented
    out = call(op, *[Tensor(a, dtype="float16", backend=cpu) for a in arrays], **attrs)
    want = {"conv2d": 8.0, "max_pool2d": 1.0, "avg_pool2d": 1.0}[op]
    assert out.dtype == np.float16 and np.all(out.numpy() == want)


def test_max_pool_kernel_gives_a_tie_to_the_first_maximum_as_torch():
    x = np.zeros((1, 2, 2, 1))
    out, (dx,) = run(load_backend("cpu"), "max_pool2d", (x,), "float64", np.ones((1, 1, 1, 1)), f=2)
    assert out.ravel().tolist() == [0.0] and dx.ravel().tolist() == [1.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("op, attrs, arrays", [
    ("conv2d", {"stride": 2, "padding": "same"}, ((1, 5, 6, 2), (3, 3, 2, 2), (2,))),
    ("conv2d", {"stride": 1, "padding": 1}, ((2, 4, 4, 1), (2, 2, 1, 3))),
    ("conv2d", {"stride": 2, "padding": "same"}, ((1, 5, 6, 3), (3, 3, 3, 40), (40,))),   # the CPU's BLAS path
    ("conv2d", {"stride": 1, "padding": "same"}, ((2, 5, 6, 8), (3, 3, 8, 15), (15,))),   # the CPU's Winograd
    ("max_pool2d", {"f": 3, "stride": 2, "padding": 1}, ((1, 5, 5, 2),)),
    ("avg_pool2d", {"f": 2, "stride": 1, "padding": "same"}, ((1, 4, 5, 2),)),
])
def test_float64_gradcheck(backend, op, attrs, arrays):
    rng = np.random.default_rng(3)
    tensors = {f"input {k}": Tensor(rng.permutation(int(np.prod(s))).reshape(s) * 0.1 if op == "max_pool2d"
                                    else rng.standard_normal(s), dtype="float64", backend=backend)
               for k, s in enumerate(arrays)}
    out_shape = call(op, *tensors.values(), **attrs).shape
    upstream = Tensor(rng.standard_normal(out_shape), dtype="float64", backend=backend)
    result = lm.gradcheck(lambda: (call(op, *tensors.values(), **attrs) * upstream).sum(), tensors)
    assert result.passed and result.relative_difference < 1e-7, result


# ---- the seed's sizes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n, f, stride, padding, expected", [
    (6, 3, 1, "valid", 4),          # 6×6 * 3×3 -> 4×4 (n - f + 1)
    (6, 3, 1, 1, 6),                # p = 1: n + 2p - f + 1
    (6, 3, 1, "same", 6), (7, 5, 1, "same", 7), (8, 4, 1, "same", 8),
    (7, 3, 2, 0, 3),                # ⌊(7 + 0 - 3)/2⌋ + 1
    (7, 3, 2, "same", 4), (10, 3, 3, "same", 4),     # TensorFlow's 'same': ⌈n/s⌉
    (32, 5, 1, "valid", 28),        # LeNet-5's first layer
])
def test_output_size(n, f, stride, padding, expected):
    x = lm.tensor(np.ones((1, n, n, 2)))
    assert lm.functional.conv2d(x, np.ones((f, f, 2, 3)), stride=stride, padding=padding).shape == \
        (1, expected, expected, 3)
    layer = lm.nn.Conv2D(2, 3, f, stride=stride, padding=padding)
    assert layer.output_shape((None, n, n, 2)) == (None, expected, expected, 3)


def test_same_padding_for_odd_f_and_stride_1_is_the_seeds_p():
    assert axis_padding("conv2d", 9, 5, 1, "same") == (2, 2)            # p = (f - 1)/2
    assert axis_padding("conv2d", 8, 4, 1, "same") == (1, 2)            # even f: the extra on the bottom
    assert axis_padding("conv2d", 7, 3, 2, "same") == (1, 1)            # (⌈7/2⌉ - 1)·2 + 3 - 7 = 2
    assert axis_padding("conv2d", 8, 3, 2, "same") == (0, 1)            # (4 - 1)·2 + 3 - 8 = 1


def test_vertical_edge_detection_by_hand():
    """The seed's figure 31: a 6×6 image, bright left half, convolved with [[1, 0, -1]]×3 -> 30s in the middle."""
    image = np.array([[10, 10, 10, 0, 0, 0]] * 6, dtype=float).reshape(1, 6, 6, 1)
    kernel = np.array([[1, 0, -1]] * 3, dtype=float).reshape(3, 3, 1, 1)
    for backend in (load_backend("cpu"), reference_backend()):
        out = call("conv2d", Tensor(image, dtype="float64", backend=backend),
                   Tensor(kernel, dtype="float64", backend=backend)).numpy()
        assert out.reshape(4, 4).tolist() == [[0, 30, 30, 0]] * 4


# ---- errors --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op, shapes, attrs, message", [
    ("conv2d", ((1, 5, 5, 3), (3, 3, 2, 4)), {}, r"conv2d: input 'x' has n_C_prev = 3 .*\(1, 5, 5, 3\).*\(3, 3, 2, 4\)"),
    ("conv2d", ((1, 2, 5, 1), (3, 3, 1, 1)), {}, r"conv2d: the 3×3 window is larger than the padded input: height 2"),
    ("conv2d", ((1, 5, 5, 1), (3, 3, 1, 1)), {"padding": "full"}, r"conv2d: 'padding' must be 'valid', 'same'"),
    ("conv2d", ((5, 5, 1), (3, 3, 1, 1)), {}, r"conv2d: argument 'x' must have 4 dimensions, got shape \(5, 5, 1\)"),
    ("conv2d", ((1, 5, 5, 1), (3, 3, 1, 2), (3,)), {}, r"conv2d: bias 'b' must have shape \(2,\)"),
    ("max_pool2d", ((1, 3, 3, 1),), {"f": 4}, r"max_pool2d: the 4×4 window is larger than the padded input"),
    ("avg_pool2d", ((1, 6, 6, 1),), {"f": 2, "padding": 2}, r"avg_pool2d: padding .* exceeds half the window"),
    ("max_pool2d", ((1, 6, 6, 1),), {"f": 2, "stride": 0}, r"max_pool2d: 'stride' must be a positive int"),
])
def test_argument_errors_name_the_op_and_shapes(op, shapes, attrs, message):
    tensors = [lm.tensor(np.zeros(s)) for s in shapes]
    with pytest.raises(lm.LaminaError, match=message):
        call(op, *tensors, **attrs)


def test_conv2d_layer_rejects_wrong_channels():
    with pytest.raises(lm.ShapeError, match=r"Conv2D layer .*expected NHWC input of shape \(m, n_H, n_W, 3\)"):
        lm.nn.Conv2D(3, 4, 3)(lm.tensor(np.zeros((1, 5, 5, 2))))


# ---- layers -----------------------------------------------------------------------------------------------
def lenet_like():
    return lm.nn.Sequential(lm.nn.Conv2D(1, 6, 3, padding="same", activation="relu"), lm.nn.MaxPool2D(2),
                            lm.nn.Conv2D(6, 8, 3, stride=1), lm.nn.ReLU(), lm.nn.AvgPool2D(2, stride=1),
                            lm.nn.Flatten(), lm.nn.Dense(8, 10))


def test_layer_output_shapes_match_the_real_outputs():
    model = lm.nn.Sequential(lm.nn.Conv2D(1, 4, 5, stride=2, padding="same"), lm.nn.MaxPool2D(3, stride=2, padding=1),
                             lm.nn.Conv2D(4, 6, 2), lm.nn.AvgPool2D(2, padding=1), lm.nn.GlobalAvgPool2D())
    shape, x = (None, 28, 28, 1), lm.tensor(np.random.default_rng(0).standard_normal((3, 28, 28, 1)))
    for layer in list(model.layers()) + [lm.nn.Flatten()]:
        shape = layer.output_shape(shape)
        x = layer(x)
        assert x.shape == (3,) + shape[1:], type(layer).__name__
    flat = lm.nn.Flatten()
    assert flat.output_shape((None, 4, 5, 6)) == (None, 120) and flat(lm.tensor(np.zeros((2, 4, 5, 6)))).shape == (2, 120)


def test_summary_prints_the_shapes_and_parameter_counts():
    text = lenet_like().summary((8, 8, 1), print_fn=None)
    assert "(None, 8, 8, 6)" in text and "(None, 4, 4, 6)" in text and "(None, 2, 2, 8)" in text
    assert "(None, 1, 1, 8)" in text and "(None, 8)" in text and "(None, 10)" in text
    assert f"Total params: {3 * 3 * 6 + 6 + 3 * 3 * 6 * 8 + 8 + 8 * 10 + 10:,}" in text


def test_layers_are_registered_by_name():
    for name, cls in (("conv2d", lm.nn.Conv2D), ("max_pool2d", lm.nn.MaxPool2D), ("avg_pool2d", lm.nn.AvgPool2D),
                      ("global_avg_pool2d", lm.nn.GlobalAvgPool2D), ("flatten", lm.nn.Flatten)):
        assert lm.registry.get("layers", name) is cls


def test_conv2d_layer_parameters_and_init_fans():
    lm.manual_seed(0)
    layer = lm.nn.Conv2D(16, 32, 3, activation="relu")
    assert layer.W.shape == (3, 3, 16, 32) and layer.b.shape == (32,)
    assert abs(layer.W.numpy().std() - np.sqrt(2.0 / (3 * 3 * 16))) < 0.01     # He with fan_in = f·f·n_C_prev
    assert lm.nn.Conv2D(2, 3, 3, use_bias=False).num_parameters() == 3 * 3 * 2 * 3


def test_lenet_like_network_learns_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images[:256] / 16.0).reshape(-1, 8, 8, 1)
    y = digits.target[:256]
    lm.manual_seed(0)
    model = lenet_like()
    loss_fn, opt = lm.losses.SoftmaxCrossEntropy(), lm.optim.Adam(model.parameters(), lr=0.01)
    xt, yt = lm.tensor(x), lm.tensor(y)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = loss_fn(model(xt), yt)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("factory, shape, expected", [
    (lambda: lm.nn.Conv2D(2, 3, 3, stride=2, padding="same", activation="tanh"), (2, 5, 4, 2), (2, 3, 2, 3)),
    (lambda: lm.nn.Conv2D(1, 2, 2, padding=1, use_bias=False), (1, 3, 3, 1), (1, 4, 4, 2)),
    (lambda: lm.nn.MaxPool2D(2), (2, 4, 4, 2), (2, 2, 2, 2)),
    (lambda: lm.nn.AvgPool2D(3, stride=1, padding=1), (1, 4, 3, 2), (1, 4, 3, 2)),
    (lambda: lm.nn.GlobalAvgPool2D(), (2, 3, 3, 4), (2, 4)),
    (lambda: lm.nn.Flatten(), (2, 3, 2, 2), (2, 12)),
])
def test_run_layer_test(factory, shape, expected):
    """Shapes, float64 gradient checks of input and parameters, state round trip and a training step."""
    report = lm.testing.run_layer_test(factory, shape, expected_output_shape=expected, backend="cpu")
    assert report is not None


def test_kernels_decline_arguments_the_op_check_refuses():
    """Called directly (without the op's check), the compiled loops would read or write out of bounds."""
    cpu, x = load_backend("cpu"), np.ones((1, 4, 4, 1))
    assert cpu.kernels["max_pool2d"](x, f=2, padding=2) is NotImplemented
    assert cpu.kernels["avg_pool2d"](x, f=3, padding=2) is NotImplemented
    assert cpu.kernels["max_pool2d"](x, f=3, padding=1) is not NotImplemented
    assert cpu.kernels["conv2d"](x, np.ones((2, 2, 3, 1))) is NotImplemented          # channels differ
    assert cpu.kernels["conv2d"](x, np.ones((2, 2, 1, 1))) is not NotImplemented


# ---- the CPU kernel's three ways: direct loops for small filter banks, Winograd for 3×3 stride 1, im2col + BLAS --
def conv2d_kernels_called(monkeypatch):
    """The names of the compiled conv2d functions called from now on, in order."""
    import lamina_cpu.backend as cpu_backend
    calls = []
    for module, names in ((cpu_backend._convolution, ("conv_direct_forward", "conv_direct_backward",
                                                      "conv_gemm_forward", "conv_gemm_backward")),
                          (cpu_backend._winograd, ("conv3x3", "filter_grad3x3"))):
        for name in names:
            compiled = getattr(module, name)
            monkeypatch.setattr(module, name, lambda *args, _f=compiled, _name=name: (calls.append(_name), _f(*args))[1])
    return calls


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("n_C, way", [(16, "direct"), (17, "gemm")])   # 4·4·4·16 = 1024 = DIRECT_MAX_WEIGHTS
@pytest.mark.parametrize("stride, padding", [(1, "valid"), (2, "same"), (3, 2)])
def test_cpu_conv2d_chooses_by_filter_size_and_both_ways_match_torch(monkeypatch, n_C, way, stride, padding,
                                                                      dtype):
    from lamina_cpu.backend import DIRECT_MAX_WEIGHTS
    assert 4 * 4 * 4 * 16 == DIRECT_MAX_WEIGHTS
    calls = conv2d_kernels_called(monkeypatch)
    rng = np.random.default_rng(n_C + stride)
    x, w, b = rng.standard_normal((2, 21, 37, 4)), rng.standard_normal((4, 4, 4, n_C)), rng.standard_normal(n_C)
    check_conv2d_against_torch(load_backend("cpu"), x, w, b, stride, padding, dtype, rng)   # n_W_out > 16 lanes
    assert calls == [f"conv_{way}_forward", f"conv_{way}_backward"]


@pytest.mark.parametrize("x_shape, w_shape, stride", [
    ((3, 11, 13, 6), (3, 3, 6, 20), 2),      # 42 pixels an image: a block of 96 ends inside the third image
    ((2, 16, 15, 5), (2, 2, 5, 70), 1),      # 210 pixels an image: three blocks each, the last partial
], ids=["blocks_across_images", "blocks_within_images"])
def test_cpu_conv2d_im2col_blocks_give_the_same_result(monkeypatch, x_shape, w_shape, stride):
    """The im2col path builds and multiplies ROW_BLOCK (96) output pixels at a time; the blocks' edges fall
    anywhere in an image (forward), the backward's blocks never cross an image."""
    calls = conv2d_kernels_called(monkeypatch)
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[3])
    check_conv2d_against_torch(load_backend("cpu"), x, w, b, stride, "same", "float64", rng)
    assert calls == ["conv_gemm_forward", "conv_gemm_backward"]


@pytest.mark.parametrize("x_shape, w_shape", [
    ((16, 30, 30, 1), (5, 5, 1, 6)),        # direct: 16·26·26 pixels · 25 · 6 multiply-adds
    ((4, 48, 48, 16), (4, 4, 16, 16)),      # BLAS: 4·45·45 pixels · 256 numbers of columns, 4 images a chunk
    ((4, 24, 24, 16), (3, 3, 16, 16)),      # Winograd: 4·36 tiles · 36 positions · 16·16 channel pairs
], ids=["direct", "gemm", "winograd"])
def test_cpu_conv2d_on_openmp_threads_matches_torch(x_shape, w_shape):
    """Above PARALLEL_MIN (2^20) the images (im2col: the columns' rows; Winograd: blocks of tiles) run on OpenMP
    threads."""
    rng = np.random.default_rng(6)
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[3])
    check_conv2d_against_torch(load_backend("cpu"), x, w, b, 1, "valid", "float64", rng)


@pytest.mark.parametrize("n_C", [3, 130], ids=["direct", "gemm"])
def test_cpu_conv2d_ignores_pixels_no_window_reads(n_C):
    """Stride 3 with f = 2 skips every third column; an inf there must not reach the output or the gradients
    (the direct kernel's vector lanes past n_W_out read such pixels and mask them)."""
    rng = np.random.default_rng(7)
    x, w = rng.standard_normal((1, 9, 40, 2)), rng.standard_normal((2, 2, 2, n_C))
    x[:, :, 2::3] = np.inf           # columns 2, 5, ..., 38 and 39 are never read (windows start at 0, 3, ..., 36)
    x[:, :, 39] = np.inf
    out, (dx, dw) = run(load_backend("cpu"), "conv2d", (x, w), "float64", rng.standard_normal((1, 3, 13, n_C)),
                        stride=3)
    assert np.isfinite(out).all() and np.isfinite(dw).all()
    assert (dx[:, :, 2::3] == 0).all() and (dx[:, :, 39] == 0).all()


@pytest.mark.parametrize("w_shape", [(3, 3, 2, 4), (3, 3, 2, 60)], ids=["direct", "gemm"])
def test_cpu_conv2d_computes_only_the_gradients_asked_for(w_shape):
    cpu, rng = load_backend("cpu"), np.random.default_rng(8)
    x, w, b = rng.standard_normal((2, 6, 7, 2)), rng.standard_normal(w_shape), rng.standard_normal(w_shape[3])
    z, backprop = cpu.kernels["conv2d"](x, w, b, padding="same")
    g = rng.standard_normal(z.shape)
    dx, dw, db = backprop(g)
    for needs in [(True, False, False), (False, True, False), (False, False, True)]:
        _, backprop = cpu.kernels["conv2d"](x, w, b, padding="same", needs_input_grad=needs)
        for got, want, need in zip(backprop(g), (dx, dw, db), needs):
            assert got is None if not need else np.array_equal(got, want)


# ---- Winograd's F(4×4, 3×3) (Lavin & Gray): 3×3 stride-1 filter banks above DIRECT_MAX_WEIGHTS -------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape, padding", [
    ((2, 13, 11, 8), "same"), ((1, 9, 6, 8), "valid"),     # sizes that are no multiple of the 4×4 output tiles
    ((3, 5, 7, 8), 1), ((1, 4, 5, 8), 2), ((2, 3, 3, 8), 3),   # outputs wider than the input, padding > 2
    ((1, 1, 1, 8), "same"), ((2, 3, 3, 8), "valid"),           # one pixel; one output pixel
])
def test_cpu_conv2d_runs_3x3_stride_1_by_winograd_and_matches_torch(monkeypatch, shape, padding, dtype):
    calls = conv2d_kernels_called(monkeypatch)
    rng = np.random.default_rng(sum(shape))
    x, w, b = rng.standard_normal(shape), rng.standard_normal((3, 3, 8, 17)), rng.standard_normal(17)
    check_conv2d_against_torch(load_backend("cpu"), x, w, b, 1, padding, dtype, rng)
    assert calls == ["conv3x3", "conv3x3", "filter_grad3x3"]     # z, then dx (flipped filters) and dW


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False), (False, False, True)])
def test_cpu_winograd_backward_computes_only_the_gradients_asked_for(monkeypatch, needs):
    calls = conv2d_kernels_called(monkeypatch)
    rng = np.random.default_rng(9)
    x, w, b = rng.standard_normal((2, 6, 7, 9)), rng.standard_normal((3, 3, 9, 14)), rng.standard_normal(14)
    check_only_the_gradients_asked_for(x, w, b, needs, rng, padding=1)
    assert calls == ["conv3x3"] + [name for name, need in zip(["conv3x3", "filter_grad3x3"], needs) if need]


def check_only_the_gradients_asked_for(x, w, b, needs, rng, stride=1, padding=0):
    """The CPU kernel's backward returns None for the gradients `needs` leaves out, torch's for the others."""
    import lamina_cpu.backend as cpu_backend
    z, backprop = cpu_backend.CpuBackend().conv2d(x, w, b, stride=stride, padding=padding, needs_input_grad=needs)
    g = rng.standard_normal(z.shape)
    grads = backprop(g)
    assert [grad is not None for grad in grads] == list(needs)
    xt, wt, bt = nchw(x), torch.tensor(w).permute(3, 2, 0, 1).requires_grad_(), torch.tensor(b).requires_grad_()
    TF.conv2d(xt, wt, bt, stride=stride, padding=padding).backward(torch.tensor(g).permute(0, 3, 1, 2))
    want = [nhwc(xt.grad), wt.grad.permute(2, 3, 1, 0).numpy(), bt.grad.numpy()]
    for grad, expected in zip(grads, want):
        if grad is not None:
            close(grad, expected, "float64")


def test_cpu_winograd_gives_way_to_blas_for_wide_channel_banks(monkeypatch):
    """Past WINOGRAD_MAX_CHANNEL_PAIRS input × output channels the transformed filters outgrow the caches."""
    import lamina_cpu.backend as cpu_backend
    monkeypatch.setattr(cpu_backend, "WINOGRAD_MAX_CHANNEL_PAIRS", 8 * 16)
    calls = conv2d_kernels_called(monkeypatch)
    rng = np.random.default_rng(10)
    for n_C in (16, 17):
        x, w, b = rng.standard_normal((2, 6, 5, 8)), rng.standard_normal((3, 3, 8, n_C)), rng.standard_normal(n_C)
        check_conv2d_against_torch(load_backend("cpu"), x, w, b, 1, "same", "float32", rng)
    assert calls == ["conv3x3", "conv3x3", "filter_grad3x3", "conv_gemm_forward", "conv_gemm_backward"]


def test_winograd_transforms_are_lavin_and_grays_matrices():
    """The C transforms equal the matrices they implement: Aᵀ[(G·g·Gᵀ) ⊙ (Bᵀ·d·B)]A is the 4×4 correlation of a
    6×6 tile d with a 3×3 filter g, and transform_filters applies G on both sides."""
    from lamina_cpu import _winograd
    rng = np.random.default_rng(11)
    d, g = rng.standard_normal((6, 6)), rng.standard_normal((3, 3))
    B_T, G, A_T = _winograd.B_T, _winograd.G, _winograd.A_T
    y = A_T @ ((G @ g @ G.T) * (B_T @ d @ B_T.T)) @ A_T.T
    want = np.array([[(d[i:i + 3, j:j + 3] * g).sum() for j in range(4)] for i in range(4)])
    np.testing.assert_allclose(y, want, rtol=1e-12, atol=1e-12)
    U = _winograd.transform_filters(g.reshape(3, 3, 1, 1))
    assert U.shape == (36, 1, 8)                                  # output channels padded to 8 float64 lanes
    np.testing.assert_allclose(U[:, 0, 0].reshape(6, 6), G @ g @ G.T, rtol=1e-14, atol=1e-14)
    assert not U[:, :, 1:].any()



# ---- 1×1 convolutions without padding: one matrix product over the pixels the stride reads ---------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("stride, padding", [(1, "valid"), (2, "same"), (3, 0)])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
def test_cpu_pointwise_conv2d_is_a_matrix_product_and_matches_torch(monkeypatch, stride, padding, bias, dtype):
    calls = conv2d_kernels_called(monkeypatch)
    rng = np.random.default_rng(stride)
    x, w = rng.standard_normal((2, 7, 8, 40)), rng.standard_normal((1, 1, 40, 30))     # 1200 > DIRECT_MAX_WEIGHTS
    b = rng.standard_normal(30) if bias else None
    if bias:
        check_conv2d_against_torch(load_backend("cpu"), x, w, b, stride, padding, dtype, rng)
    else:
        upstream = rng.standard_normal((2, -(-7 // stride), -(-8 // stride), 30))
        out, (dx, dw) = run(load_backend("cpu"), "conv2d", (x, w), dtype, upstream, stride=stride, padding=padding)
        xt, wt = nchw(x), torch.tensor(w).permute(3, 2, 0, 1).requires_grad_()
        want = TF.conv2d(xt, wt, stride=stride)
        want.backward(torch.tensor(upstream).permute(0, 3, 1, 2))
        close(out, nhwc(want), dtype)
        close(dx, nhwc(xt.grad), dtype)
        close(dw, wt.grad.permute(2, 3, 1, 0).numpy(), dtype)
    assert calls == []           # no im2col, no direct loops: BLAS on the pixels themselves


def test_cpu_pointwise_conv2d_with_padding_goes_through_im2col(monkeypatch):
    calls = conv2d_kernels_called(monkeypatch)
    rng = np.random.default_rng(4)
    x, w, b = rng.standard_normal((1, 5, 4, 40)), rng.standard_normal((1, 1, 40, 30)), rng.standard_normal(30)
    check_conv2d_against_torch(load_backend("cpu"), x, w, b, 1, 1, "float64", rng)   # the border pixels are b
    assert calls == ["conv_gemm_forward", "conv_gemm_backward"]


@pytest.mark.parametrize("needs", [(True, False, False), (False, True, False), (False, False, True)])
def test_cpu_pointwise_backward_computes_only_the_gradients_asked_for(needs):
    rng = np.random.default_rng(12)
    x, w, b = rng.standard_normal((2, 5, 6, 40)), rng.standard_normal((1, 1, 40, 30)), rng.standard_normal(30)
    check_only_the_gradients_asked_for(x, w, b, needs, rng, stride=2)
