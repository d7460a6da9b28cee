"""The CUDA backend's fused sequence kernels (§5.1–5.6) and its concatenate and local response normalization
(§4.7, 4.10): forward and backward against the CPU backend's kernels (masks, initial states, every `returns`, both
GRU formulations, the peephole LSTM, float32 and float64) and against PyTorch CPU (torch.nn.RNN/GRU/LSTM with the
weights mapped, the seed's variants written in torch, F.embedding, torch.cat, F.local_response_norm); that the
fused kernels ran (spies); `needs_input_grad`; float64 gradient checks on the device.

Without an NVIDIA GPU these run in Numba's CUDA simulator (tests/conftest.py), hence the tiny shapes."""
import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina as lm
from lamina.backend import load_backend
from lamina.gradcheck import gradcheck
from lamina.ops import call
from lamina.tensor import Tensor
from lamina.testing import run_layer_test
from lamina_cuda import device
from lamina_cuda.kernels import joining, persistent, recurrent
from test_recurrent import torch_peephole_lstm, torch_reference, torch_seed_gru

TOLERANCE = {"float64": 1e-10, "float32": 2e-5}
M, T, N_X, N_A = 3, 4, 3, 2
#: the rows of one mask: full length, a prefix of 2, and a hole at step 1 (a padded step between real ones)
MASKS = {"none": None, "padded": np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 1, 1]], np.uint8)}
#: (op, attrs, peephole)
VARIANTS = {"rnn": ("rnn", {}, False), "gru": ("gru", {"reset_after": True}, False),
            "seed_gru": ("gru", {"reset_after": False}, False), "lstm": ("lstm", {}, False),
            "peephole_lstm": ("lstm", {}, True)}
N_GATES = {"rnn": 1, "gru": 3, "lstm": 4}


@pytest.fixture(scope="module")
def cuda():
    return load_backend("cuda")


@pytest.fixture(scope="module")
def cpu():
    return load_backend("cpu")


def sequence_inputs(op, rng, peephole=False, dtype="float64", m=M, steps=T, n_a=N_A):
    """x, a<0> [, c<0>], W_x, W_a, biases (GRU: b_x, b_a) [, P] as NumPy arrays."""
    G = N_GATES[op] * n_a
    r = lambda *s: (rng.standard_normal(s) * 0.6).astype(dtype)  # noqa: E731
    states = [r(m, n_a) for _ in range(2 if op == "lstm" else 1)]
    biases = [r(G) for _ in range(2 if op == "gru" else 1)]
    return [r(m, steps, N_X), *states, r(N_X, G), r(n_a, G), *biases] + ([r(3, n_a)] if peephole else [])


def run(backend, op, arrays, upstream, requires_grad=None, **attrs):
    """(output, gradient of every input or None) of `op` on `backend` under the upstream gradient."""
    requires_grad = requires_grad or [np.asarray(a).dtype.kind == "f" for a in arrays]
    tensors = [Tensor(a, dtype=np.asarray(a).dtype, backend=backend, requires_grad=rg)
               for a, rg in zip(arrays, requires_grad)]
    out = call(op, *tensors, **attrs)
    (out * Tensor(upstream, dtype=out.dtype, backend=backend)).sum().backward()
    return out.numpy(), [None if t.grad is None else t.grad.numpy() for t in tensors]


def close(got, want, dtype, what=""):
    tol = TOLERANCE[str(np.dtype(dtype))]
    np.testing.assert_allclose(got, want, rtol=tol * 10, atol=tol * max(1.0, float(np.abs(want).max())), err_msg=what)


def assert_same_run(got, want, dtype):
    close(got[0], want[0], dtype, "output")
    for k, (g, w) in enumerate(zip(got[1], want[1])):
        assert (g is None) == (w is None), f"gradient of input {k}: {g} vs {w}"
        if w is not None:
            assert g.dtype == w.dtype
            close(g, w, dtype, f"gradient of input {k}")


@pytest.fixture
def spy(monkeypatch):
    """Counts the calls of the fused launchers the backend's kernels go through."""
    calls = []

    def watch(module, name):
        original = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, **k: calls.append(name) or original(*a, **k))

    for module, name in [(recurrent, "sequence"), (recurrent, "embedding"), (joining, "concatenate"),
                         (joining, "split"), (joining, "local_response_norm")]:
        watch(module, name)
    return calls


# ---- the recurrences against the CPU backend's kernels -------------------------------------------------
@pytest.mark.parametrize("masked", list(MASKS))
@pytest.mark.parametrize("returns", ["sequence", "state", "both"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_sequence_matches_cpu_kernels(cuda, cpu, spy, variant, returns, masked):
    op, attrs, peephole = VARIANTS[variant]
    rng = np.random.default_rng(17)
    arrays = sequence_inputs(op, rng, peephole)
    attrs = dict(attrs, returns=returns, mask=MASKS[masked])
    shape = call(op, *(Tensor(a, dtype=a.dtype, backend=cpu) for a in arrays), **attrs).shape
    upstream = rng.standard_normal(shape)
    assert_same_run(run(cuda, op, arrays, upstream, **attrs), run(cpu, op, arrays, upstream, **attrs), "float64")
    assert spy == ["sequence"]


@pytest.mark.parametrize("variant", ["gru", "seed_gru", "peephole_lstm"])
def test_float32_sequence_matches_cpu_kernels(cuda, cpu, variant):
    op, attrs, peephole = VARIANTS[variant]
    rng = np.random.default_rng(5)
    arrays = sequence_inputs(op, rng, peephole, dtype="float32")
    attrs = dict(attrs, returns="both", mask=MASKS["padded"])
    upstream = rng.standard_normal((M, T + (2 if op == "lstm" else 1), N_A)).astype(np.float32)
    assert_same_run(run(cuda, op, arrays, upstream, **attrs), run(cpu, op, arrays, upstream, **attrs), "float32")


def test_padded_steps_output_zero_and_carry_the_state(cuda):
    """The hole at step 1 of row 2: output 0 there, and a<2> computed from a<0> as if the step were absent."""
    op, mask = "lstm", MASKS["padded"]
    arrays = sequence_inputs(op, np.random.default_rng(3))
    tensors = [Tensor(a, dtype=a.dtype, backend=cuda) for a in arrays]
    out = call(op, *tensors, mask=mask, returns="both").numpy()
    np.testing.assert_array_equal(out[:, :T][mask == 0], 0.0)
    x, a0, c0, *weights = arrays
    skipped = [Tensor(a, dtype=a.dtype, backend=cuda) for a in [x[2:3, [0, 2, 3]], a0[2:3], c0[2:3], *weights]]
    alone = call(op, *skipped, returns="both").numpy()[0]
    close(out[2, [0, 2, 3]], alone[:3], "float64")
    close(out[2, T:], alone[3:], "float64")


# ---- the persistent kernels (one cooperative launch per direction) and the step-by-step fallback -----------
#: (hidden units, units per chunk or None for the default plan, or "steps" for LAMINA_CUDA_PERSISTENT_RNN=0, and
#: whether the weights are staged in shared memory): one chunk; three chunks of one unit with 2 threads per
#: (example, unit) pair; 2 + 1 units (a short last chunk); the same read from global memory, packed per chunk;
#: 9 units, so each sum over a<t-1> runs its loop unrolled (persistent.UNROLL terms a pass) twice and one term after
RUNS = {"one-chunk": (2, None, True), "chunks-of-1": (3, 1, True), "short-last-chunk": (3, 2, True),
        "nine-units": (9, None, True),
        "global-weights": (3, 2, False), "global-weights-chunks-of-1": (3, 1, False),
        "step-by-step": (2, "steps", True)}


@pytest.mark.parametrize("variant", ["rnn", "gru", "lstm", "peephole_lstm", "seed_gru"])
@pytest.mark.parametrize("how", list(RUNS))
def test_persistent_and_stepwise_match_cpu_kernels(cuda, cpu, monkeypatch, how, variant):
    """Every way of running a recurrence gives the CPU kernels' output and gradients (mask with a hole, final
    states), and the persistent kernel ran exactly when planned: once forward, once backward (never for the seed's
    GRU, whose two products a step need a barrier between them). In the simulator the cooperative grid is one
    block, so chunks past the first are the block's to restage at every step."""
    op, attrs, peephole = VARIANTS[variant]
    n_a, units, staged = RUNS[how]
    launches = []
    launch = persistent.launch
    monkeypatch.setattr(persistent, "launch", lambda *a: launches.append(a[1]) or launch(*a))
    if units == "steps":
        monkeypatch.setenv(persistent.ENVIRONMENT, "0")
    elif units is not None:
        plan = persistent.plan
        monkeypatch.setattr(persistent, "plan",
                            lambda dtype, m, n, gates: plan(dtype, m, n, gates, units=units, staged=staged))
    rng = np.random.default_rng(23)
    arrays = sequence_inputs(op, rng, peephole, n_a=n_a)
    attrs = dict(attrs, returns="both", mask=MASKS["padded"])
    S = 2 if op == "lstm" else 1
    upstream = rng.standard_normal((M, T + S, n_a))
    assert_same_run(run(cuda, op, arrays, upstream, **attrs), run(cpu, op, arrays, upstream, **attrs), "float64")
    if units == "steps" or variant == "seed_gru":
        assert launches == []
    else:
        assert len(launches) == 2 and launches[0] is launches[1]
        assert launches[0].gates == N_GATES[op] and launches[0].staged == staged
        if units is not None:
            assert launches[0].units == units and launches[0].chunks == -(-n_a // units) > 1
            if device.simulator() and units == 1:
                assert launches[0].segments == 2            # 8 threads over 3 (example, unit) pairs


def test_recurrences_go_step_by_step_where_the_cooperative_kernel_cannot_be_linked(cuda, cpu, monkeypatch):
    """A grid sync needs the CUDA device runtime at link time: if linking (or the cooperative launch) fails, one
    warning says why and every recurrence runs step by step, with the same results."""
    from numba.cuda.cudadrv.driver import LinkerError

    def no_device_runtime(*args):
        raise LinkerError("libcudadevrt.a: cannot open file")

    monkeypatch.setattr(persistent, "_unusable", [])
    monkeypatch.setattr(device, "cooperative_blocks", no_device_runtime)
    rng = np.random.default_rng(29)
    arrays = sequence_inputs("gru", rng)
    upstream = rng.standard_normal((M, T + 1, N_A))
    with pytest.warns(RuntimeWarning, match=r"persistent recurrent kernels cannot run here \(LinkerError: "
                                            r"libcudadevrt.a: cannot open file\); recurrences run step by step"):
        got = run(cuda, "gru", arrays, upstream, returns="both")
    assert_same_run(got, run(cpu, "gru", arrays, upstream, returns="both"), "float64")
    assert persistent.launch(None, persistent.plan(np.dtype(np.float64), M, N_A, 3)) is False   # known: no retry


def test_persistent_plan_stages_what_shared_memory_can_hold(monkeypatch):
    """Weights that fit in a block's 48 KiB go to shared memory; wider ones stay in global memory, packed."""
    monkeypatch.delenv(persistent.ENVIRONMENT, raising=False)
    small = persistent.plan(np.dtype(np.float32), 4, 8, 4, units=2)
    assert small.staged and small.shared_bytes <= persistent.SHARED_LIMIT
    wide = persistent.plan(np.dtype(np.float64), 4, 4096, 4, units=2)              # 4·4096·2 doubles = 256 KiB
    assert not wide.staged and wide.shared_bytes == 4 * wide.threads * 8 <= persistent.SHARED_LIMIT
    assert persistent.plan(np.dtype(np.float64), 4, 2048, 1, units=2).staged       # 2048·2 doubles = 32 KiB
    monkeypatch.setenv(persistent.ENVIRONMENT, "0")
    assert persistent.plan(np.dtype(np.float32), 4, 8, 4) is None


@pytest.mark.parametrize("by_rows", [False, True], ids=["columns", "rows"])
def test_packed_weights_hold_each_chunks_weights_in_the_staged_layout(by_rows):
    """n = 5 units in chunks of 2 (the last one short, padded with zeros), 3 gates."""
    n, gates, J = 5, 3, 2
    W = np.arange(n * gates * n, dtype=np.float64).reshape(n, gates * n) + 1
    chosen = persistent.Plan(J, 8, 1, 8, n, gates, staged=False)
    packed = persistent.weights(chosen, device.to_device(W), by_rows).copy_to_host().reshape(3, -1)
    for c in range(3):
        units = [j for j in (2 * c, 2 * c + 1)]
        if by_rows:
            want = np.array([[W[j, col] if j < n else 0 for j in units] for col in range(gates * n)])
        else:
            want = np.array([[[W[k, q * n + j] if j < n else 0 for q in range(gates)] for j in units]
                             for k in range(n)])
        np.testing.assert_array_equal(packed[c], want.ravel())


# ---- against PyTorch (the weight mapping and the torch formulas of tests/test_recurrent.py) ---------------
@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
@pytest.mark.parametrize("op", ["rnn", "gru", "lstm"])
def test_sequence_matches_torch_modules(cuda, op, masked):
    """torch.nn.RNN/GRU/LSTM with the weights mapped; with a prefix mask, each sequence runs in torch for its length."""
    rng = np.random.default_rng(11)
    arrays = sequence_inputs(op, rng)
    lengths = np.array([4, 2, 1]) if masked else None
    mask = (np.arange(T)[None, :] < lengths[:, None]).astype(np.uint8) if masked else None
    S = 2 if op == "lstm" else 1
    upstream = rng.standard_normal((M, T + S, N_A))
    seq, finals, grads = torch_reference(op, arrays, upstream[:, :T] * (1 if mask is None else mask[..., None]),
                                         [upstream[:, T + s] for s in range(S)], lengths)
    want = np.concatenate([seq] + [f[:, None] for f in finals], axis=1)
    assert_same_run(run(cuda, op, arrays, upstream, returns="both", mask=mask), (want, grads), "float64")


@pytest.mark.parametrize("variant", ["seed_gru", "peephole_lstm"])
def test_seed_variants_match_torch_formulas(cuda, variant):
    op, attrs, peephole = VARIANTS[variant]
    rng = np.random.default_rng(13)
    arrays = sequence_inputs(op, rng, peephole)
    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    seq, finals = (torch_seed_gru if op == "gru" else torch_peephole_lstm)(*tensors)
    want = torch.cat([seq] + [f[:, None] for f in finals], 1)
    upstream = rng.standard_normal(want.shape)
    (want * torch.tensor(upstream)).sum().backward()
    assert_same_run(run(cuda, op, arrays, upstream, returns="both", **attrs),
                    (want.detach().numpy(), [t.grad.numpy() for t in tensors]), "float64")


# ---- needs_input_grad and the fallback ---------------------------------------------------------------------
def test_only_the_gradients_asked_for(cuda, cpu, monkeypatch):
    """With `needs_input_grad`, the backward computes (and returns) only the gradients of inputs that need one."""
    returned = []
    fused = recurrent.sequence

    def watched(*args, **kwargs):
        out, backprop = fused(*args, **kwargs)
        return out, lambda g, needs=None: returned.append(backprop(g, needs)) or returned[-1]

    monkeypatch.setattr(recurrent, "sequence", watched)
    op = "gru"
    rng = np.random.default_rng(2)
    arrays = sequence_inputs(op, rng)
    upstream = rng.standard_normal((M, T, N_A))
    asked = [False, True, False, True, False, True]        # a<0>, W_a, b_a
    got = run(cuda, op, arrays, upstream, requires_grad=asked)
    want = run(cpu, op, arrays, upstream)
    assert [g is not None for g in returned[0]] == asked
    for k, (g, w) in enumerate(zip(got[1], want[1])):
        if asked[k]:
            close(g, w, "float64", f"gradient of input {k}")
        else:
            assert g is None


def test_mixed_dtypes_fall_back_to_the_default(cuda, spy):
    """The kernels decline what they do not handle (here float16) and the op's default runs instead."""
    rng = np.random.default_rng(4)
    arrays = [a.astype(np.float16) for a in sequence_inputs("rnn", rng)]
    tensors = [Tensor(a, dtype=a.dtype, backend=cuda) for a in arrays]
    assert call("rnn", *tensors).shape == (M, T, N_A)
    assert "sequence" not in spy


# ---- embedding, concatenate, local response normalization --------------------------------------------------
@pytest.mark.parametrize("index_dtype", ["int64", "int32"])
def test_embedding_matches_torch_with_repeated_indices(cuda, cpu, spy, index_dtype):
    rng = np.random.default_rng(7)
    E = rng.standard_normal((6, 3))
    indices = np.array([[4, 1, 4], [4, 0, 1]], dtype=index_dtype)       # 4 three times, row 2, 3 and 5 unused
    upstream = rng.standard_normal((2, 3, 3))
    got = run(cuda, "embedding", [indices, E], upstream)
    Et = torch.tensor(E, requires_grad=True)
    want = TF.embedding(torch.tensor(indices.astype(np.int64)), Et)
    (want * torch.tensor(upstream)).sum().backward()
    close(got[0], want.detach().numpy(), "float64")
    assert got[1][0] is None
    close(got[1][1], Et.grad.numpy(), "float64")
    np.testing.assert_array_equal(got[1][1][[2, 3, 5]], 0.0)
    assert_same_run(got, run(cpu, "embedding", [indices, E], upstream), "float64")
    assert spy == ["embedding"]


@pytest.mark.parametrize("shapes, axis", [([(2, 3, 2), (2, 1, 2), (2, 2, 2)], 1), ([(2, 2, 2, 3), (2, 2, 2, 1)], -1),
                                          ([(1, 3), (2, 3)], 0), ([(4,), (3,)], 0), ([(2, 2),], 1)])
def test_concatenate_matches_torch(cuda, spy, shapes, axis):
    rng = np.random.default_rng(8)
    arrays = [rng.standard_normal(s) for s in shapes]
    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    want = torch.cat(tensors, dim=axis)
    upstream = rng.standard_normal(want.shape)
    (want * torch.tensor(upstream)).sum().backward()
    assert_same_run(run(cuda, "concatenate", arrays, upstream, axis=axis),
                    (want.detach().numpy(), [t.grad.numpy() for t in tensors]), "float64")
    assert spy == ["concatenate", "split"]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape, size, alpha, beta, k", [((2, 2, 3, 6), 5, 0.5, 0.75, 2.0), ((1, 2, 2, 4), 2, 1.0, 0.5, 1.0),
                                                         ((2, 1, 1, 5), 7, 2.0, 1.5, 0.5), ((2, 1, 2, 3), 1, 0.3, 0.75, 1.0)])
def test_local_response_norm_matches_torch(cuda, cpu, spy, dtype, shape, size, alpha, beta, k):
    rng = np.random.default_rng(9)
    x = rng.standard_normal(shape).astype(dtype)
    xt = torch.tensor(x.astype(np.float64), requires_grad=True)
    want = TF.local_response_norm(xt.permute(0, 3, 1, 2), size, alpha=alpha, beta=beta, k=k).permute(0, 2, 3, 1)
    upstream = rng.standard_normal(shape).astype(dtype)
    (want * torch.tensor(upstream.astype(np.float64))).sum().backward()
    attrs = dict(size=size, alpha=alpha, beta=beta, k=k)
    got = run(cuda, "local_response_norm", [x], upstream, **attrs)
    close(got[0], want.detach().numpy(), dtype)
    close(got[1][0], xt.grad.numpy(), dtype)
    assert_same_run(got, run(cpu, "local_response_norm", [x], upstream, **attrs), dtype)
    assert spy == ["local_response_norm"]


# ---- float64 gradient checks on the device -------------------------------------------------------------------
@pytest.mark.parametrize("variant, attrs", [
    pytest.param("seed_gru", {"returns": "both", "mask": MASKS["padded"][:2, :3]}, marks=pytest.mark.simulator_slow),
    pytest.param("peephole_lstm", {"returns": "both", "mask": MASKS["padded"][:2, :3]},
                 marks=pytest.mark.simulator_slow),
    ("rnn", {"returns": "state"})])
def test_sequence_gradchecks(cuda, spy, variant, attrs):
    """Every input, through the fused kernels (masks, the final states in the output), at 2 sequences of 3 steps."""
    op, variant_attrs, peephole = VARIANTS[variant]
    rng = np.random.default_rng(21)
    arrays = sequence_inputs(op, rng, peephole, m=2, steps=3)
    tensors = {f"input {k}": Tensor(a, dtype=np.float64, backend=cuda) for k, a in enumerate(arrays)}
    shape = call(op, *tensors.values(), **variant_attrs, **attrs).shape
    upstream = Tensor(rng.standard_normal(shape), dtype=np.float64, backend=cuda)
    result = gradcheck(lambda: (call(op, *tensors.values(), **variant_attrs, **attrs) * upstream).sum(), tensors)
    assert result.passed, result
    assert set(spy) == {"sequence"}


@pytest.mark.simulator_slow
def test_lstm_layer_runs_the_fused_kernel_end_to_end(spy):
    """The LSTM layer on cuda (peepholes, sequences out): run_layer_test's shapes, gradient check, state round trip
    and SGD step, through the fused kernel."""
    run_layer_test(lambda: lm.nn.LSTM(3, 2, return_sequences=True, peephole=True), (2, 3, 3), backend="cuda")
    assert spy and set(spy) == {"sequence"}
