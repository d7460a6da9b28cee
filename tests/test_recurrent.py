"""Recurrent ops and layers (§5.1–5.3, 5.5–5.8): parity with torch.nn.RNN/GRU/LSTM (weights mapped) forward and
backward, with initial states, masks (against per-sequence torch runs) and bidirectional; the seed's GRU and the
peephole LSTM against the same formulas written in torch; float64 gradient checks of every variant; the CPU
kernels against the composite defaults; truncated BPTT; stacking; argument errors."""
import numpy as np
import pytest
import torch

import lamina as lm
from lamina.backend import load_backend
from lamina.gradcheck import gradcheck
from lamina.ops import call
from lamina.ops.recurrent import split_returns
from lamina.registry import resolve
from lamina.tensor import Tensor
from lamina.testing import gradcheck_op, reference_backend, run_layer_test

TOLERANCE = {"float64": 1e-9, "float32": 2e-4}
M, T, N_X, N_A = 4, 6, 3, 5
LENGTHS = np.array([6, 3, 1, 5])
MASK = (np.arange(T)[None, :] < LENGTHS[:, None]).astype(np.uint8)


@pytest.fixture(params=["cpu", "reference"])
def backend(request):
    """The CPU backend's fused kernels, or the reference backend, which runs the composite defaults."""
    return load_backend("cpu") if request.param == "cpu" else reference_backend()


# ---- weight mapping: Lamina (n_in, G·n_a) column blocks <-> torch (G·n_a, n_in) row blocks ----------------
def to_torch_layout(op, W):
    """Lamina's gate blocks -> torch's: LSTM [u f o c̃] -> [i f g o]; GRU [r u c̃] -> [r z n] with z = 1 − Γ_u
    (a sign flip of u's pre-activation); transposed. Signed permutations, so the same map takes gradients."""
    blocks = np.split(np.asarray(W), {"rnn": 1, "gru": 3, "lstm": 4}[op], axis=-1)
    if op == "lstm":
        blocks = [blocks[0], blocks[1], blocks[3], blocks[2]]
    if op == "gru":
        blocks = [blocks[0], -blocks[1], blocks[2]]
    return np.concatenate(blocks, axis=-1).T


def torch_module(op, W_x, W_a, b_x, b_a, bidirectional=False, back=None):
    cls = {"rnn": torch.nn.RNN, "gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[op]
    module = cls(W_x.shape[0], W_a.shape[0], batch_first=True, bidirectional=bidirectional).double()
    for suffix, weights in [("", (W_x, W_a, b_x, b_a))] + ([("_reverse", back)] if bidirectional else []):
        wx, wa, bx, ba = weights
        getattr(module, "weight_ih_l0" + suffix).data = torch.tensor(to_torch_layout(op, wx))
        getattr(module, "weight_hh_l0" + suffix).data = torch.tensor(to_torch_layout(op, wa))
        getattr(module, "bias_ih_l0" + suffix).data = torch.tensor(to_torch_layout(op, bx))
        getattr(module, "bias_hh_l0" + suffix).data = torch.tensor(to_torch_layout(op, ba))
    return module


def random_case(op, rng, dtype="float64", peephole=False):
    """Inputs of op `op` as NumPy arrays: x, initial states, weights, biases (GRU: b_x, b_a), [P]."""
    G = {"rnn": 1, "gru": 3, "lstm": 4}[op]
    r = lambda *s: (rng.standard_normal(s) * 0.6).astype(dtype)  # noqa: E731
    states = [r(M, N_A) for _ in range(2 if op == "lstm" else 1)]
    biases = [r(G * N_A) for _ in range(2 if op == "gru" else 1)]
    return [r(M, T, N_X), *states, r(N_X, G * N_A), r(N_A, G * N_A), *biases] + ([r(3, N_A)] if peephole else [])


def run_op(backend, op, arrays, dtype, upstream, **attrs):
    """(output, gradient of every input) of `op` under the upstream gradient."""
    tensors = [Tensor(a, dtype=dtype, backend=backend, requires_grad=True) for a in arrays]
    out = call(op, *tensors, **attrs)
    (out * Tensor(upstream, dtype=dtype, backend=backend)).sum().backward()
    return out.numpy(), [t.grad.numpy() for t in tensors]


def close(got, want, dtype, what=""):
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(got, want, rtol=tol * 10, atol=tol * max(1.0, float(np.abs(want).max())), err_msg=what)


# ---- torch parity of the ops ------------------------------------------------------------------------------
def torch_reference(op, arrays, g_seq, g_states, lengths=None):
    """torch's outputs and gradients (in Lamina's layout) for the op's inputs; with `lengths`, each sequence runs
    on its own for its length (torch's h_n is then the state after its last real step)."""
    x, *rest = arrays
    n_states = 2 if op == "lstm" else 1
    states, (W_x, W_a, *biases) = rest[:n_states], rest[n_states:]
    b_x, b_a = (biases if op == "gru" else (biases[0], np.zeros_like(biases[0])))
    module = torch_module(op, W_x, W_a, b_x, b_a)
    xt = torch.tensor(x, requires_grad=True)
    st = [torch.tensor(s, requires_grad=True) for s in states]
    lengths = np.full(len(x), x.shape[1]) if lengths is None else lengths
    seq = torch.zeros(x.shape[0], x.shape[1], W_a.shape[0], dtype=torch.float64)
    finals = [[] for _ in range(n_states)]
    for i, L in enumerate(lengths):
        h0 = [s[i:i + 1].unsqueeze(0) for s in st]
        y, h = module(xt[i:i + 1, :L], tuple(h0) if op == "lstm" else h0[0])
        seq = seq.index_put((torch.tensor([i]),), torch.nn.functional.pad(y, (0, 0, 0, x.shape[1] - L)))
        for k, hk in enumerate(h if op == "lstm" else (h,)):
            finals[k].append(hk[0])
    finals = [torch.cat(f) for f in finals]
    loss = (seq * torch.tensor(g_seq)).sum() + sum((f * torch.tensor(g)).sum() for f, g in zip(finals, g_states))
    loss.backward()
    params = dict(module.named_parameters())
    back = {"lstm": [0, 1, 3, 2], "gru": [0, 1, 2], "rnn": [0]}[op]
    sign = {"lstm": [1, 1, 1, 1], "gru": [1, -1, 1], "rnn": [1]}[op]

    def lamina_layout(t):
        blocks = np.split(t.grad.numpy().T, len(back), axis=-1)
        return np.concatenate([sign[k] * blocks[k] for k in np.argsort(back)], axis=-1)

    grads = [xt.grad.numpy()] + [s.grad.numpy() for s in st]
    grads += [lamina_layout(params["weight_ih_l0"]), lamina_layout(params["weight_hh_l0"])]
    if op == "gru":
        grads += [lamina_layout(params["bias_ih_l0"]), lamina_layout(params["bias_hh_l0"])]
    else:
        grads += [lamina_layout(params["bias_ih_l0"])]
    return seq.detach().numpy(), [f.detach().numpy() for f in finals], grads


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("op", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
def test_op_matches_torch(backend, op, dtype, masked):
    rng = np.random.default_rng(len(op) + masked)
    arrays = random_case(op, rng)
    n_states = 2 if op == "lstm" else 1
    g_seq = rng.standard_normal((M, T, N_A))
    g_states = [rng.standard_normal((M, N_A)) for _ in range(n_states)]
    mask = MASK if masked else None
    upstream = np.concatenate([g_seq] + [g[:, None] for g in g_states], axis=1)
    out, grads = run_op(backend, op, [a.astype(dtype) for a in arrays], dtype, upstream.astype(dtype), mask=mask,
                        returns="both")
    seq, finals = out[:, :T], [out[:, T + k] for k in range(n_states)]
    want_seq, want_finals, want_grads = torch_reference(op, arrays, g_seq * (MASK[..., None] if masked else 1),
                                                        g_states, LENGTHS if masked else None)
    close(seq, want_seq, dtype, "sequence")
    for k, (got, want) in enumerate(zip(finals, want_finals)):
        close(got, want, dtype, f"final state {k}")
    names = ["x"] + [f"state {k}" for k in range(n_states)] + ["W_x", "W_a"] + (["b_x", "b_a"] if op == "gru" else ["b"])
    for name, got, want in zip(names, grads, want_grads):
        close(got, want, dtype, f"gradient of {name}")
    if masked:
        assert np.all(seq[MASK == 0] == 0)
        assert np.all(grads[0][MASK == 0] == 0)          # padded inputs get no gradient


@pytest.mark.parametrize("returns", ["sequence", "state"])
def test_returns_sequence_or_state(backend, returns):
    rng = np.random.default_rng(3)
    arrays = random_case("lstm", rng)
    both = call("lstm", *[Tensor(a, dtype="float64", backend=backend) for a in arrays], returns="both").numpy()
    one = call("lstm", *[Tensor(a, dtype="float64", backend=backend) for a in arrays], returns=returns).numpy()
    np.testing.assert_allclose(one, both[:, :T] if returns == "sequence" else both[:, T:], rtol=1e-12, atol=1e-12)


# ---- the seed's GRU and the peephole LSTM: the formulas written in torch ---------------------------------
def torch_seed_gru(x, a, W_x, W_a, b_x, b_a):
    n = a.shape[1]
    outs = []
    for t in range(x.shape[1]):
        p = x[:, t] @ W_x + b_x
        r = torch.sigmoid(p[:, :n] + a @ W_a[:, :n] + b_a[:n])
        u = torch.sigmoid(p[:, n:2 * n] + a @ W_a[:, n:2 * n] + b_a[n:2 * n])
        c = torch.tanh(p[:, 2 * n:] + (r * a) @ W_a[:, 2 * n:] + b_a[2 * n:])
        a = u * c + (1 - u) * a
        outs.append(a)
    return torch.stack(outs, 1), [a]


def torch_peephole_lstm(x, a, c, W_x, W_a, b, P):
    n = a.shape[1]
    outs = []
    for t in range(x.shape[1]):
        z = x[:, t] @ W_x + a @ W_a + b
        u = torch.sigmoid(z[:, :n] + P[0] * c)
        f = torch.sigmoid(z[:, n:2 * n] + P[1] * c)
        o = torch.sigmoid(z[:, 2 * n:3 * n] + P[2] * c)
        c = u * torch.tanh(z[:, 3 * n:]) + f * c
        a = o * torch.tanh(c)
        outs.append(a)
    return torch.stack(outs, 1), [a, c]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", ["seed_gru", "peephole_lstm"])
def test_seed_variants_match_torch_formulas(backend, case, dtype):
    rng = np.random.default_rng(7)
    op, attrs, fn = (("gru", {"reset_after": False}, torch_seed_gru) if case == "seed_gru"
                     else ("lstm", {}, torch_peephole_lstm))
    arrays = random_case(op, rng, peephole=op == "lstm")
    n_states = 2 if op == "lstm" else 1
    upstream = rng.standard_normal((M, T + n_states, N_A))
    out, grads = run_op(backend, op, [a.astype(dtype) for a in arrays], dtype, upstream.astype(dtype),
                        returns="both", **attrs)
    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    seq, finals = fn(*tensors)
    want = torch.cat([seq] + [f[:, None] for f in finals], 1)
    (want * torch.tensor(upstream)).sum().backward()
    close(out, want.detach().numpy(), dtype, "output")
    for k, (got, t) in enumerate(zip(grads, tensors)):
        close(got, t.grad.numpy(), dtype, f"gradient of input {k}")


# ---- gradient checks --------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["rnn", "gru", "lstm"])
def test_op_gradchecks(backend, op):
    results = gradcheck_op(backend, op)
    assert len(results) >= 3 and all(r.passed for r in results)


LAYER_CASES = {
    "simple_rnn": lambda: lm.nn.SimpleRNN(N_X, N_A, return_sequences=True),
    "simple_rnn_last": lambda: lm.nn.SimpleRNN(N_X, N_A),
    "gru": lambda: lm.nn.GRU(N_X, N_A, return_sequences=True),
    "seed_gru": lambda: lm.nn.GRU(N_X, N_A, return_sequences=True, reset_after=False),
    "lstm": lambda: lm.nn.LSTM(N_X, N_A, return_sequences=True),
    "peephole_lstm": lambda: lm.nn.LSTM(N_X, N_A, peephole=True),
    "bidirectional_lstm": lambda: lm.nn.Bidirectional(lm.nn.LSTM(N_X, N_A, return_sequences=True)),
    "bidirectional_gru_last": lambda: lm.nn.Bidirectional(lm.nn.GRU(N_X, N_A)),
    "stacked": lambda: lm.nn.stacked(lm.nn.GRU, N_X, N_A, num_layers=2),
    "time_distributed": lambda: lm.nn.TimeDistributed(lm.nn.Dense(N_X, 2, activation="tanh")),
}


@pytest.mark.parametrize("name", list(LAYER_CASES))
def test_run_layer_test(name):
    lm.manual_seed(0)
    report = run_layer_test(LAYER_CASES[name], (2, 4, N_X))
    assert report.gradcheck.passed


@pytest.mark.parametrize("cls,options", [(lm.nn.SimpleRNN, {}), (lm.nn.GRU, {}), (lm.nn.GRU, {"reset_after": False}),
                                         (lm.nn.LSTM, {}), (lm.nn.LSTM, {"peephole": True})],
                         ids=["rnn", "gru", "seed_gru", "lstm", "peephole_lstm"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["one_way", "bidirectional"])
def test_masked_layers_gradcheck(cls, options, bidirectional):
    with lm.set_default_dtype("float64"):
        lm.manual_seed(1)
        layer = cls(N_X, N_A, return_sequences=True, return_state=True, **options)
        layer = lm.nn.Bidirectional(layer) if bidirectional else layer
        rng = np.random.default_rng(2)
        x = lm.tensor(rng.standard_normal((M, T, N_X)), requires_grad=True)
        outs = layer(x, mask=MASK)
        upstream = [lm.tensor(rng.standard_normal(o.shape)) for o in outs]
        params = dict(layer.named_parameters(), x=x)
        result = gradcheck(lambda: sum((o * g).sum() for o, g in zip(layer(x, mask=MASK), upstream)), params)
        assert result.passed, result


# ---- layers against torch modules: initial states, masks, bidirectional -----------------------------------
def layer_weights(layer):
    if isinstance(layer, lm.nn.SimpleRNN):
        return layer.W_ax.numpy(), layer.W_aa.numpy(), layer.b_a.numpy(), np.zeros(N_A)
    if isinstance(layer, lm.nn.GRU):
        return layer.W_x.numpy(), layer.W_a.numpy(), layer.b_x.numpy(), layer.b_a.numpy()
    return layer.W_x.numpy(), layer.W_a.numpy(), layer.b.numpy(), np.zeros(4 * N_A)


@pytest.mark.parametrize("cls", [lm.nn.SimpleRNN, lm.nn.GRU, lm.nn.LSTM], ids=["rnn", "gru", "lstm"])
@pytest.mark.parametrize("masked", [False, True], ids=["full", "packed"])
def test_bidirectional_matches_torch(cls, masked):
    with lm.set_default_dtype("float64"):
        lm.manual_seed(4)
        layer = lm.nn.Bidirectional(cls(N_X, N_A, return_sequences=True, return_state=True))
        op = layer.forward_layer.op
        n_states = 2 if op == "lstm" else 1
        rng = np.random.default_rng(5)
        x_np = rng.standard_normal((M, T, N_X))
        h0 = [rng.standard_normal((2, M, N_A)) for _ in range(n_states)]   # torch's (directions, m, n_a)
        x = lm.tensor(x_np, requires_grad=True)
        init = [[lm.tensor(h[d], requires_grad=True) for h in h0] for d in range(2)]
        mask = MASK if masked else None
        out, *states = layer(x, initial_state=[tuple(s) if op == "lstm" else s[0] for s in init], mask=mask)
        g_out = rng.standard_normal(out.shape) * (MASK[..., None] if masked else 1)
        g_states = [rng.standard_normal(s.shape) for s in states]
        loss = (out * lm.tensor(g_out)).sum() + sum((s * lm.tensor(g)).sum() for s, g in zip(states, g_states))
        loss.backward()

    module = torch_module(op, *layer_weights(layer.forward_layer), bidirectional=True,
                          back=layer_weights(layer.backward_layer))
    xt = torch.tensor(x_np, requires_grad=True)
    ht = [torch.tensor(h, requires_grad=True) for h in h0]
    lengths = LENGTHS if masked else np.full(M, T)
    packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
    y, h = module(packed, tuple(ht) if op == "lstm" else ht[0])
    y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=T)
    finals = list(h) if op == "lstm" else [h]
    # Lamina's states: forward (a, [c]) then backward (a, [c]); torch's: per kind, (direction, m, n_a)
    want_states = [finals[k][d] for d in range(2) for k in range(n_states)]
    loss = (y * torch.tensor(g_out)).sum() + sum((s * torch.tensor(g)).sum() for s, g in zip(want_states, g_states))
    loss.backward()
    close(out.numpy(), y.detach().numpy(), "float64", "output")
    for got, want in zip(states, want_states):
        close(got.numpy(), want.detach().numpy(), "float64", "final state")
    close(x.grad.numpy(), xt.grad.numpy(), "float64", "gradient of x")
    for d in range(2):
        for k in range(n_states):
            close(init[d][k].grad.numpy(), ht[k].grad[d].numpy(), "float64", f"gradient of initial state {d},{k}")
    suffix = ["", "_reverse"]
    for d, inner in enumerate([layer.forward_layer, layer.backward_layer]):
        W_x = inner.W_ax if op == "rnn" else inner.W_x
        W_a = inner.W_aa if op == "rnn" else inner.W_a
        close(to_torch_layout(op, W_x.grad.numpy()), module.get_parameter("weight_ih_l0" + suffix[d]).grad.numpy(),
              "float64", "gradient of W_x")
        close(to_torch_layout(op, W_a.grad.numpy()), module.get_parameter("weight_hh_l0" + suffix[d]).grad.numpy(),
              "float64", "gradient of W_a")


def test_many_to_one_with_padding_uses_each_sequences_last_real_step():
    with lm.set_default_dtype("float64"):
        layer = lm.nn.GRU(N_X, N_A)
        rng = np.random.default_rng(6)
        x = rng.standard_normal((M, T, N_X))
        last = layer(lm.tensor(x), mask=MASK).numpy()
        for i, L in enumerate(LENGTHS):
            np.testing.assert_allclose(last[i], layer(lm.tensor(x[i:i + 1, :L])).numpy()[0], rtol=1e-12, atol=1e-12)


# ---- truncated BPTT ---------------------------------------------------------------------------------------
def test_truncated_bptt_carries_detached_state():
    with lm.set_default_dtype("float64"):
        lm.manual_seed(8)
        layer = lm.nn.LSTM(N_X, N_A, return_sequences=True, return_state=True)
        x = np.random.default_rng(9).standard_normal((2, 8, N_X))
        full, *_ = layer(lm.tensor(x))
        state, chunks = None, []
        for start in range(0, 8, 4):
            y, *state = layer(lm.tensor(x[:, start:start + 4]), initial_state=lm.nn.detach_state(state))
            chunks.append(y.numpy())
        np.testing.assert_allclose(np.concatenate(chunks, axis=1), full.numpy(), rtol=1e-12, atol=1e-12)
        # the second chunk's gradient stops at the boundary: it equals the gradient with a constant initial state
        y, *_ = layer(lm.tensor(x[:, 4:]), initial_state=tuple(s.detach() for s in state))
        y.sum().backward()
        truncated = layer.W_a.grad.numpy().copy()
        layer.zero_grad()
        y_full, *_ = layer(lm.tensor(x))
        y_full[:, 4:].sum().backward()
        assert not np.allclose(truncated, layer.W_a.grad.numpy())   # full BPTT also reaches the first chunk
        assert lm.nn.detach_state(state)[0]._node is None and lm.nn.detach_state(None) is None


# ---- the fused kernels against the composite defaults -----------------------------------------------------
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("op,attrs", [("rnn", {}), ("gru", {}), ("gru", {"reset_after": False}), ("lstm", {}),
                                      ("lstm", {"peephole": True})],
                         ids=["rnn", "gru", "seed_gru", "lstm", "peephole_lstm"])
@pytest.mark.parametrize("masked", [False, True], ids=["full", "masked"])
def test_cpu_kernels_match_composite_defaults(op, attrs, dtype, masked):
    rng = np.random.default_rng(10)
    peephole = attrs.pop("peephole", False) if "peephole" in attrs else False
    arrays = random_case(op, rng, peephole=peephole)
    n_states = 2 if op == "lstm" else 1
    upstream = rng.standard_normal((M, T + n_states, N_A)).astype(dtype)
    extra = dict(attrs, mask=MASK if masked else None, returns="both")
    got = run_op(load_backend("cpu"), op, [a.astype(dtype) for a in arrays], dtype, upstream, **extra)
    want = run_op(reference_backend(), op, [a.astype(dtype) for a in arrays], dtype, upstream, **extra)
    close(got[0], want[0], dtype, "output")
    for k, (g, w) in enumerate(zip(got[1], want[1])):
        close(g, w, dtype, f"gradient of input {k}")


# ---- layer API ----------------------------------------------------------------------------------------------
def test_layers_are_registered():
    for name, cls in [("simple_rnn", lm.nn.SimpleRNN), ("gru", lm.nn.GRU), ("lstm", lm.nn.LSTM),
                      ("bidirectional", lm.nn.Bidirectional), ("time_distributed", lm.nn.TimeDistributed),
                      ("embedding", lm.nn.Embedding)]:
        assert resolve("layers", name) is cls


def test_shapes_and_counts():
    assert lm.nn.LSTM(128, 256).num_parameters() == 4 * 256 * (128 + 256 + 1)
    assert lm.nn.LSTM(3, 5, peephole=True).num_parameters() == 4 * 5 * 9 + 15
    assert lm.nn.GRU(128, 256).num_parameters() == 3 * 256 * (128 + 256 + 2)     # torch.nn.GRU's count
    layer = lm.nn.Bidirectional(lm.nn.LSTM(3, 5, return_sequences=True, return_state=True))
    assert layer.output_shape((None, 7, 3)) == ((None, 7, 10), (None, 5), (None, 5), (None, 5), (None, 5))
    assert lm.nn.TimeDistributed(lm.nn.Dense(5, 2)).output_shape((None, 7, 5)) == (None, 7, 2)
    deep = lm.nn.stacked(lm.nn.LSTM, 3, 4, num_layers=3, keep_prob=0.8)
    assert [type(l).__name__ for l in deep.layers()] == ["LSTM", "Dropout", "LSTM", "Dropout", "LSTM"]
    assert deep.output_shape((None, 6, 3)) == (None, 4)
    assert deep(lm.tensor(np.zeros((2, 6, 3)))).shape == (2, 4)


def test_errors_name_the_layer_and_argument():
    layer = lm.nn.LSTM(3, 4)
    with pytest.raises(lm.errors.ShapeError, match=r"LSTM layer 'lstm'.*n_x = input_size = 3.*\(2, 5, 2\)"):
        layer(lm.tensor(np.zeros((2, 5, 2))))
    with pytest.raises(lm.errors.LaminaError, match=r"'initial_state' must be \(a<0>, c<0>\)"):
        layer(lm.tensor(np.zeros((2, 5, 3))), initial_state=lm.tensor(np.zeros((2, 4))))
    with pytest.raises(lm.errors.ShapeError, match=r"lstm: 'mask' must have shape \(m, T_x\) = \(2, 5\)"):
        layer(lm.tensor(np.zeros((2, 5, 3))), mask=np.ones((2, 4)))
    with pytest.raises(lm.errors.ShapeError, match="padding at the end"):
        lm.nn.Bidirectional(lm.nn.GRU(3, 4))(lm.tensor(np.zeros((1, 3, 3))), mask=np.array([[1, 0, 1]]))
    x = lm.tensor(np.zeros((2, 5, 3)))
    with pytest.raises(lm.errors.ShapeError, match=r"gru: 'W_x' must have shape \(3, 12\)"):
        call("gru", x, lm.tensor(np.zeros((2, 4))), lm.tensor(np.zeros((2, 12))), lm.tensor(np.zeros((4, 12))),
             lm.tensor(np.zeros(12)), lm.tensor(np.zeros(12)))
    with pytest.raises(lm.errors.OpError, match="'returns' must be one of"):
        call("rnn", x, lm.tensor(np.zeros((2, 4))), lm.tensor(np.zeros((3, 4))), lm.tensor(np.zeros((4, 4))),
             lm.tensor(np.zeros(4)), returns="all")


def test_functional_splits_sequence_and_states():
    rng = np.random.default_rng(11)
    arrays = [lm.tensor(a) for a in random_case("lstm", rng)]
    seq, (a_T, c_T) = lm.functional.lstm(*arrays, returns="both")
    packed = call("lstm", *arrays, returns="both").numpy()
    np.testing.assert_array_equal(seq.numpy(), packed[:, :T])
    np.testing.assert_array_equal(c_T.numpy(), packed[:, T + 1])
    assert split_returns(packed, "state", T)[0] is None


def test_lstm_learns_a_long_range_pattern():
    """Many-to-one: is there a 1 in the first step of a 12-step noise sequence? Only memory across 11 steps solves it."""
    lm.manual_seed(12)
    rng = np.random.default_rng(12)
    m, steps = 256, 12
    x = rng.uniform(-1, 1, (m, steps, 1)) * 0.3
    y = rng.integers(0, 2, m)
    x[:, 0, 0] = y * 2.0 - 1.0
    model = lm.nn.Sequential(lm.nn.LSTM(1, 8), lm.nn.Dense(8, 2))
    opt = lm.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        loss = lm.functional.softmax_cross_entropy(model(lm.tensor(x)), lm.tensor(y))
        model.zero_grad()
        loss.backward()
        opt.step()
    accuracy = (model(lm.tensor(x)).numpy().argmax(1) == y).mean()
    assert accuracy > 0.95


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("op,attrs", [("rnn", {}), ("gru", {}), ("gru", {"reset_after": False}), ("lstm", {}),
                                      ("lstm", {"peephole": True})],
                         ids=["rnn", "gru", "seed_gru", "lstm", "peephole_lstm"])
def test_cpu_kernels_on_threads_and_in_parts_match_composite_defaults(op, attrs, dtype):
    """Above PARALLEL_MIN (m·n·G ≥ 2^20) a step's units are split into parts (64 float32 or 32 float64 units,
    the last part partial: n = 100) run on the OpenMP threads, each multiplying its own columns of every gate."""
    m, T, n_x, n = 110, 4, 20, 100
    G = {"rnn": 1, "gru": 3, "lstm": 4}[op]
    rng = np.random.default_rng(11)
    r = lambda *s: rng.standard_normal(s) * 0.3  # noqa: E731
    arrays = [r(m, T, n_x)] + [r(m, n) for _ in range(2 if op == "lstm" else 1)] + [r(n_x, G * n), r(n, G * n)]
    arrays += [r(G * n) for _ in range(2 if op == "gru" else 1)] + ([r(3, n)] if attrs.pop("peephole", False) else [])
    mask = np.ones((m, T))
    mask[::3, 2:] = 0
    upstream = rng.standard_normal((m, T + (2 if op == "lstm" else 1), n)).astype(dtype)
    extra = dict(attrs, mask=mask, returns="both")
    got = run_op(load_backend("cpu"), op, [a.astype(dtype) for a in arrays], dtype, upstream, **extra)
    want = run_op(reference_backend(), op, [a.astype(dtype) for a in arrays], dtype, upstream, **extra)
    close(got[0], want[0], dtype, "output")
    for k, (g, w) in enumerate(zip(got[1], want[1])):
        close(g, w, dtype, f"gradient of input {k}")


@pytest.mark.parametrize("cls", [lm.nn.SimpleRNN, lm.nn.GRU, lm.nn.LSTM], ids=["rnn", "gru", "lstm"])
def test_run_returns_the_sequence_and_the_states_to_go_on_from(cls):
    """layer.run ignores return_sequences/return_state; running T steps, then the rest from the states it
    returned, equals running the whole sequence."""
    lm.manual_seed(3)
    with lm.set_default_dtype("float64"):
        layer = cls(3, 4)                       # returns only a<T> from forward
    x = Tensor(np.random.default_rng(3).standard_normal((2, 7, 3)), dtype="float64")
    whole, states = layer.run(x)
    assert whole.shape == (2, 7, 4) and len(states) == (2 if cls is lm.nn.LSTM else 1)
    first, middle = layer.run(x[:, :3])
    rest, final = layer.run(x[:, 3:], middle)
    np.testing.assert_allclose(np.concatenate([first.numpy(), rest.numpy()], axis=1), whole.numpy(), rtol=1e-12)
    for got, want in zip(final, states):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer(x).numpy(), states[0].numpy(), rtol=1e-12)


def test_gru_update_bias_starts_the_update_gate_closed():
    """update_bias = b_xu + b_au at the start (b_au = 0), the other biases uniform as PyTorch's; Γ_u = σ(−3) keeps
    95% of a<t-1> for a zero input and zero weights."""
    lm.manual_seed(4)
    layer = lm.nn.GRU(2, 3, update_bias=-3.0)
    np.testing.assert_array_equal(layer.b_x.numpy()[3:6], -3.0)
    np.testing.assert_array_equal(layer.b_a.numpy()[3:6], 0.0)
    assert np.abs(layer.b_x.numpy()[:3]).max() <= 1 / np.sqrt(3) and layer.b_x.numpy()[:3].any()
    assert layer.config["update_bias"] == -3.0 and lm.nn.GRU(2, 3).config["update_bias"] is None
    for p in (layer.W_x, layer.W_a):
        p.data = p.backend.asarray(np.zeros(p.shape), p.dtype)
    a0 = Tensor(np.ones((1, 3)), dtype=layer.W_x.dtype)
    a1 = layer(Tensor(np.zeros((1, 1, 2)), dtype=layer.W_x.dtype), a0).numpy()
    u = 1 / (1 + np.exp(3.0))
    c = np.tanh(layer.b_x.numpy()[6:] + 1 / (1 + np.exp(-layer.b_x.numpy()[:3] - layer.b_a.numpy()[:3])) *
                layer.b_a.numpy()[6:])
    np.testing.assert_allclose(a1[0], u * c + (1 - u) * 1.0, rtol=1e-5)
