"""The CUDA backend's tiled matrix product (lamina_cuda.kernels.matmul): every pair of transpositions,
sizes off the tile grid in M, N and K (partial tiles and slices), broadcast batches, float32 and float64,
against NumPy; tilings whose threads hold several runs of rows and columns (the GPU's arrangement) as
well as the simulator's; the bias added in the epilogue (dense, conv2d), and a dense layer's dW and db
from one product (the ones row and the bias-gradient epilogue); the step products of the recurrences;
tilings the kernel cannot split.

Without a GPU these run in Numba's CUDA simulator (tests/conftest.py), so the shapes are small."""
import numpy as np
import pytest

from lamina.backend import load_backend
from lamina_cuda import device
from lamina_cuda.kernels import matmul
from lamina_cuda.kernels.geometry import device_vector
from lamina_cuda.kernels.matmul import Tiling, affine, gemm, gemm_kernel, tiling_for

TOLERANCE = {np.float64: 1e-12, np.float32: 1e-5, np.float16: 1e-2}


def product(a, b, trans_a=False, trans_b=False, **kwargs):
    """gemm on the device, back on the host."""
    return gemm(device.to_device(a), device.to_device(b), trans_a, trans_b, **kwargs).copy_to_host()


def operands(rng, batch_a, batch_b, M, N, K, trans_a, trans_b, dtype):
    a = rng.standard_normal(batch_a + ((K, M) if trans_a else (M, K))).astype(dtype)
    b = rng.standard_normal(batch_b + ((N, K) if trans_b else (K, N))).astype(dtype)
    return a, b


def expected(a, b, trans_a, trans_b):
    return np.matmul(np.swapaxes(a, -1, -2) if trans_a else a, np.swapaxes(b, -1, -2) if trans_b else b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("M, N, K", [(1, 1, 1), (16, 16, 8), (17, 5, 19), (9, 33, 3)],
                         ids=["1x1x1", "one-tile", "partial-tiles", "partial-slice"])
def test_gemm_matches_numpy(M, N, K, trans_a, trans_b, dtype):
    rng = np.random.default_rng(M * 100 + N * 10 + K)
    a, b = operands(rng, (), (), M, N, K, trans_a, trans_b, dtype)
    np.testing.assert_allclose(product(a, b, trans_a, trans_b), expected(a, b, trans_a, trans_b),
                               rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype] * K)


@pytest.mark.parametrize("batch_a, batch_b", [((3,), (3,)), ((2, 1), (3,)), ((), (2,))])
def test_gemm_broadcasts_batches(batch_a, batch_b):
    rng = np.random.default_rng(0)
    a, b = operands(rng, batch_a, batch_b, 6, 7, 5, False, True, np.float64)
    out = product(a, b, trans_b=True)
    want = expected(a, b, False, True)
    assert out.shape == want.shape
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype, tiling", [(np.float32, Tiling(64, 64, 8, 8, 8)),
                                           (np.float64, Tiling(16, 16, 8, 4, 4)),
                                           (np.float32, Tiling(64, 32, 8, 8, 4)),
                                           (np.float16, Tiling(16, 16, 8, 4, 4))],
                         ids=["float32-two-runs", "float64-two-runs", "float32-rectangular", "float16-short-runs"])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, True)])
def test_gemm_with_several_runs_per_thread(dtype, tiling, trans_a, trans_b):
    """Each thread's rows and columns in runs of 16 bytes, a block-width apart (as on a GPU)."""
    rng = np.random.default_rng(1)
    M, N, K = tiling.BM + 3, tiling.BN - 1, 2 * tiling.BK + 1
    a, b = operands(rng, (), (), M, N, K, trans_a, trans_b, dtype)
    np.testing.assert_allclose(product(a, b, trans_a, trans_b, tiling=tiling), expected(a, b, trans_a, trans_b),
                               rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype] * K)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a, trans_b, batch", [(False, False, ()), (True, True, ()), (False, True, (2,))])
def test_gemm_adds_the_bias_to_every_row_in_its_epilogue(trans_a, trans_b, batch, dtype):
    """Partial tiles in M and N: only the written columns take a bias, each its own."""
    rng = np.random.default_rng(3)
    M, N, K = 17, 21, 9
    a, b = operands(rng, batch, (), M, N, K, trans_a, trans_b, dtype)
    bias = rng.standard_normal(N).astype(dtype)
    got = gemm(device.to_device(a), device.to_device(b), trans_a, trans_b, bias=device.to_device(bias)).copy_to_host()
    np.testing.assert_allclose(got, expected(a, b, trans_a, trans_b) + bias, rtol=TOLERANCE[dtype],
                               atol=TOLERANCE[dtype] * K)
    empty = gemm(device.to_device(a[..., :0] if not trans_a else a[..., :0, :]),
                 device.to_device(b[:0] if not trans_b else b[:, :0]), trans_a, trans_b, bias=device.to_device(bias))
    np.testing.assert_array_equal(empty.copy_to_host(), np.broadcast_to(bias, batch + (M, N)))   # K = 0: the bias


@pytest.mark.parametrize("shape, dtype", [((4,), np.float32), ((3,), np.float64)],
                         ids=["wrong-length", "wrong-dtype"])
def test_gemm_rejects_a_bias_it_cannot_add(shape, dtype):
    a, b = np.ones((2, 3), np.float32), np.ones((3, 3), np.float32)
    with pytest.raises(ValueError, match=r"gemm: bias must be a vector of 3 float32, got shape"):
        gemm(device.to_device(a), device.to_device(b), bias=device.to_device(np.zeros(shape, dtype)))


@pytest.mark.parametrize("bias_shape", [(5,), (1, 5), (4, 5), None], ids=["vector", "row", "full", "none"])
def test_affine_fuses_a_vector_bias_and_adds_any_other(bias_shape):
    """x·W + b: a vector of N goes through the epilogue, other broadcastable shapes through the elementwise add."""
    rng = np.random.default_rng(4)
    x, W = rng.standard_normal((4, 3)), rng.standard_normal((3, 5))
    b = None if bias_shape is None else rng.standard_normal(bias_shape)
    got = affine(device.to_device(x), device.to_device(W), None if b is None else device.to_device(b)).copy_to_host()
    np.testing.assert_allclose(got, x @ W + (0 if b is None else b), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tiling", [Tiling(16, 16, 8, 4, 4), Tiling(32, 32, 8, 4, 4)], ids=str)
@pytest.mark.parametrize("rows, n_in, N", [(1, 1, 1), (19, 16, 5), (40, 31, 17)],
                         ids=["1x1x1", "ones-row-alone-in-a-tile", "partial-tiles"])
def test_the_bias_gradient_epilogue_gives_dW_and_db_from_one_product(rows, n_in, N, tiling, dtype):
    """[x | 1]ᵀ·g through `ones_row_loader`: its first n_in rows are xᵀ·g (dW), its last Σ_rows g (db), written to
    its own vector. n_in = 16 puts the ones row alone in a new tile of 16 rows."""
    rng = np.random.default_rng(rows + n_in + N)
    x, g = rng.standard_normal((rows, n_in)).astype(dtype), rng.standard_normal((rows, N)).astype(dtype)
    dW, db = device.empty((n_in, N), dtype), device.empty((N,), dtype)
    zero = device_vector((0,))
    matmul.product(device.to_device(x.ravel()), device.to_device(g.ravel()), dW, rows, zero, zero, trans_a=True,
                   tiling=tiling, a_loader=matmul.ones_row_loader, last_row=db)
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(dW.copy_to_host(), x.T @ g, rtol=tol, atol=tol * rows)
    np.testing.assert_allclose(db.copy_to_host(), g.sum(axis=0), rtol=tol, atol=tol * rows)


def test_the_ones_row_follows_an_operand_read_along_k():
    """A = [a; 1ᵀ] with a stored (M, K) row-major: the product's last row is the column sums of B."""
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((5, 11)), rng.standard_normal((11, 7))
    out, last = device.empty((5, 7), np.float64), device.empty((7,), np.float64)
    zero = device_vector((0,))
    matmul.product(device.to_device(a.ravel()), device.to_device(b.ravel()), out, 11, zero, zero,
                   a_loader=matmul.ones_row_loader, last_row=last)
    np.testing.assert_allclose(out.copy_to_host(), a @ b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(last.copy_to_host(), b.sum(axis=0), rtol=1e-12, atol=1e-12)


def test_weight_and_bias_gradients_of_no_rows_are_zeros():
    dW, db = matmul.weight_and_bias_gradients(device.to_device(np.ones((0, 3))), device.to_device(np.ones((0, 2))))
    np.testing.assert_array_equal(dW.copy_to_host(), np.zeros((3, 2)))
    np.testing.assert_array_equal(db.copy_to_host(), np.zeros(2))


def test_the_bias_gradient_epilogue_refuses_what_it_cannot_write():
    zero = device_vector((0,))
    a, out = device.to_device(np.ones(6)), device.empty((3, 2), np.float64)
    with pytest.raises(ValueError, match=r"gemm: last_row must be a vector of 2 float64, got shape \(3,\)"):
        matmul.product(a, a, out, 2, zero, zero, last_row=device.empty((3,), np.float64))
    with pytest.raises(ValueError, match="last_row takes the last row of one product without a bias"):
        matmul.product(a, a, out, 2, zero, zero, last_row=device.empty((2,), np.float64),
                       bias=device.empty((2,), np.float64))
    with pytest.raises(ValueError, match="epilogue must be one of store, bias, bias_gradient, got 'relu'"):
        gemm_kernel(np.dtype(np.float64), Tiling(16, 16, 8, 4, 4), False, False, "relu")


def test_a_dense_layer_takes_dW_and_db_from_one_product(monkeypatch):
    """The dense op's backward with a bias: dx and [dW; db] (two products), no separate column sum."""
    cuda = load_backend("cuda")
    calls = []
    original = matmul.product
    monkeypatch.setattr(matmul, "product", lambda *a, **k: calls.append(k.get("last_row") is not None) or
                        original(*a, **k))
    monkeypatch.setattr("lamina_cuda.kernels.reduction.reduce", lambda *a, **k: pytest.fail("a separate column sum"))
    rng = np.random.default_rng(4)
    x, W, b, g = (rng.standard_normal(s) for s in ((6, 3), (3, 4), (4,), (6, 4)))
    z, backprop = cuda.kernels["dense"](cuda.asarray(x, np.float64), cuda.asarray(W, np.float64),
                                        cuda.asarray(b, np.float64))
    calls.clear()
    dx, dW, db = backprop(cuda.asarray(g, np.float64))
    assert calls == [False, True]
    for got, want in ((dx, g @ W.T), (dW, x.T @ g), (db, g.sum(axis=0))):
        np.testing.assert_allclose(got.copy_to_host(), want, rtol=1e-12, atol=1e-12)


def test_gemm_of_empty_operands():
    assert product(np.ones((0, 3), np.float32), np.ones((3, 4), np.float32)).shape == (0, 4)
    np.testing.assert_array_equal(product(np.ones((2, 0)), np.ones((0, 4))), np.zeros((2, 4)))


@pytest.mark.parametrize("tiling", [Tiling(32, 32, 8, 8, 8), Tiling(16, 16, 6, 4, 4), Tiling(16, 16, 3, 4, 4),
                                    Tiling(12, 12, 12, 2, 2)])
def test_gemm_rejects_tilings_it_cannot_split(tiling):
    with pytest.raises(ValueError, match=r"threads must be a multiple of BK, BM and BN, and BK a power of two"):
        gemm_kernel(np.dtype(np.float32), tiling, False, False)


def test_the_simulator_and_the_gpu_tilings_split():
    """Every tiling the backend picks (and the GPU benchmark's alternatives) compiles its loader constants."""
    from lamina_cuda.kernels.matmul import GPU_TILINGS, OTHER_TILINGS, SIMULATOR_TILING
    chosen = [(dtype, tiling) for dtype, tilings in GPU_TILINGS.items() for tiling in tilings]
    for dtype, tiling in [*chosen, *((np.dtype(np.float16), t) for t in OTHER_TILINGS),
                          (np.dtype(np.float32), SIMULATOR_TILING), (np.dtype(np.float32), Tiling(128, 64, 8, 8, 4)),
                          (np.dtype(np.float32), Tiling(128, 128, 16, 8, 8))]:
        gemm_kernel(dtype, tiling, True, False)
    assert tiling_for(np.float32) == tiling_for(np.float32, 4096, 4096) == SIMULATOR_TILING


@pytest.mark.parametrize("dtype, M, N, batches, expected", [
    (np.float32, 4096, 4096, 1, Tiling(128, 128, 8, 8, 8)),    # 1024 blocks of 128²
    (np.float32, 1024, 1536, 1, Tiling(128, 64, 8, 8, 4)),     # 96 blocks of 128² leave SMs idle; 192 of 128×64
    (np.float32, 1536, 1024, 1, Tiling(128, 64, 8, 8, 4)),
    (np.float32, 100352, 64, 1, Tiling(128, 64, 8, 8, 4)),     # a 3×3/64 conv: 128² tiles would be half padding
    (np.float32, 64, 100352, 1, Tiling(64, 128, 8, 4, 8)),
    (np.float32, 4000, 200, 1, Tiling(64, 64, 8, 4, 4)),       # 128 of 128×64 fall short; 252 of 64², 78% useful
    (np.float32, 512, 1024, 1, Tiling(32, 32, 8, 4, 4)),       # 128 blocks of 64²: just short
    (np.float32, 64, 1024, 1, Tiling(32, 32, 8, 4, 4)),        # an LSTM step's product: the smallest
    (np.float32, 256, 256, 16, Tiling(64, 64, 8, 4, 4)),       # batches count: 16·16 blocks of 64²
    (np.float64, 2048, 2048, 1, Tiling(64, 64, 8, 4, 4)),
    (np.float64, 64, 64, 1, Tiling(32, 32, 8, 4, 4)),
    (np.float16, 8, 8, 1, Tiling(32, 32, 8, 4, 4)),
])
def test_the_gpu_tiling_covers_the_multiprocessors(monkeypatch, dtype, M, N, batches, expected):
    """The most work per thread whose blocks still cover every multiprocessor (132 on an H100/H200 SXM)."""
    monkeypatch.setattr(device, "simulator", lambda: False)
    monkeypatch.setattr(device, "multiprocessors", lambda: 132)
    assert tiling_for(dtype, M, N, batches) == expected
