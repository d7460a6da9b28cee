"""Transfer learning (§3.9): loading a checkpoint into a model with another head, freezing layers
(no gradient, no optimizer state), and training the head on cached trunk features, which
must equal training the whole model with its trunk frozen."""
import numpy as np
import pytest
from safetensors.numpy import load_file

import lamina as lm
from lamina import checkpoint
from lamina.data import Split
from lamina.errors import CheckpointError, LaminaError
from lamina.training import fit, predict
from lamina.transfer import cached_features, features_key, freeze, load_matching, split_model


@pytest.fixture
def float64():
    with lm.set_default_dtype("float64"):
        yield


def _model(n_out, seed=0):
    lm.manual_seed(seed)
    return lm.nn.Sequential(lm.nn.Dense(5, 8, activation="relu"), lm.nn.Dense(8, 6, activation="tanh"),
                            lm.nn.Dense(6, n_out))


def _data(m=120, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, 5))
    return X, (X[:, 0] - X[:, 2] > 0).astype(np.int64)


def test_load_matching_takes_the_trunk_and_reports_the_head(tmp_path):
    pretrained = _model(10, seed=1)
    checkpoint.save(tmp_path, pretrained)
    model = _model(2, seed=2)
    head_before = {k: v.copy() for k, v in model.state_dict().items() if k.startswith("2.")}
    report = load_matching(model, tmp_path)
    assert report.loaded == ["0.W", "0.b", "1.W", "1.b"]
    assert report.skipped == {"2.W": "shape (6, 10) in the checkpoint but (6, 2) in the model",
                              "2.b": "shape (10,) in the checkpoint but (2,) in the model"}
    assert report.missing == ["2.W", "2.b"]
    state, source = model.state_dict(), pretrained.state_dict()
    for name in report.loaded:
        np.testing.assert_array_equal(state[name], source[name])
    for name, value in head_before.items():
        np.testing.assert_array_equal(state[name], value)
    assert "skipped 2.W: shape (6, 10)" in str(report) and "left as initialized: 2.W, 2.b" in str(report)


def test_load_matching_from_a_state_dict_with_renames_and_extra_arrays():
    source = dict(_model(2, seed=1).state_dict(), **{"3.W": np.zeros((2, 2))})
    model = _model(2, seed=2)
    report = load_matching(model, source, rename=lambda name: None if name.startswith("1.") else name)
    assert report.loaded == ["0.W", "0.b", "2.W", "2.b"]
    assert report.skipped == {"1.W": "renamed away", "1.b": "renamed away",
                              "3.W": "the model has no parameter '3.W'"}
    with pytest.raises(CheckpointError, match="no array of the checkpoint matches"):
        load_matching(model, {"trunk.0.W": np.zeros((5, 8))})


def test_frozen_layers_get_no_gradient_no_optimizer_state_and_do_not_change(float64):
    model = _model(2)
    assert freeze(model, [0, "dense_1"]) == ["0.W", "0.b", "1.W", "1.b"]
    before = model.state_dict()
    X, y = _data()
    optimizer = lm.optim.Adam(model.parameters(), lr=0.05)     # given every parameter, frozen ones too
    for _ in range(3):
        optimizer.zero_grad()
        lm.losses.SoftmaxCrossEntropy()(model(lm.tensor(X)), lm.tensor(y)).backward()
        assert [name for name, p in model.named_parameters() if p.grad is not None] == ["2.W", "2.b"]
        optimizer.step()
    assert sorted(optimizer.state) == [4, 5]                    # the indices of 2.W and 2.b
    after = model.state_dict()
    for name in ("0.W", "0.b", "1.W", "1.b"):
        np.testing.assert_array_equal(after[name], before[name])
    assert not np.array_equal(after["2.W"], before["2.W"])
    assert model.num_parameters(trainable_only=True) == 6 * 2 + 2


def test_freeze_and_split_errors():
    model = _model(2)
    assert freeze(model, [-1]) == ["2.W", "2.b"]
    with pytest.raises(LaminaError, match="has 3 layers, no layer 3"):
        freeze(model, [3])
    with pytest.raises(LaminaError, match="no layer 'head'"):
        freeze(model, ["head"])
    with pytest.raises(LaminaError, match="head_layers must be between 1 and 2"):
        split_model(model, head_layers=3)


def test_trunk_features_are_cached_in_safetensors_keyed_by_weights_and_inputs(tmp_path, float64):
    trunk, head = split_model(_model(2), head_layers=1)
    assert len(trunk) == 2 and len(head) == 1
    X, _ = _data()
    features = cached_features(trunk, X, tmp_path)
    np.testing.assert_array_equal(features, predict(trunk, X))
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == [f"features-{features_key(trunk, X)}.safetensors"]
    np.testing.assert_array_equal(load_file(files[0])["features"], features)     # plain safetensors

    def boom(*_):
        raise AssertionError("the trunk ran although its features were cached")

    trunk.forward = boom
    np.testing.assert_array_equal(cached_features(trunk, X, tmp_path), features)
    del trunk.forward

    key = features_key(trunk, X)
    assert features_key(trunk, X[:-1]) != key and features_key(trunk, X + 1e-12) != key
    trunk[0].W.data = trunk[0].W.backend.asarray(trunk[0].W.numpy() * 2, trunk[0].W.dtype)
    assert features_key(trunk, X) != key
    changed = cached_features(trunk, X, tmp_path)
    assert len(list(tmp_path.iterdir())) == 2 and not np.array_equal(changed, features)

    files[0].write_bytes(b"not safetensors")                                     # a damaged entry is recomputed
    trunk[0].W.data = trunk[0].W.backend.asarray(trunk[0].W.numpy() / 2, trunk[0].W.dtype)
    np.testing.assert_array_equal(cached_features(trunk, X, tmp_path), features)


def test_training_the_head_on_cached_features_equals_training_with_a_frozen_trunk(tmp_path, float64):
    X, y = _data(160)
    train = Split(X, y)
    pretrained = _model(4, seed=1)
    checkpoint.save(tmp_path / "pretrained", pretrained)
    loss = lm.losses.SoftmaxCrossEntropy()

    full = _model(2, seed=5)
    load_matching(full, tmp_path / "pretrained")
    freeze(full, [0, 1])
    full_history = fit(full, loss, lm.optim.Adam(full.parameters(), lr=0.02), train, epochs=4, batch_size=32,
                       progress=False)

    fast = _model(2, seed=5)
    load_matching(fast, tmp_path / "pretrained")
    trunk, head = split_model(fast, head_layers=1)
    features = cached_features(trunk, X, tmp_path / "cache")
    head_history = fit(head, loss, lm.optim.Adam(head.parameters(), lr=0.02), Split(features, y), epochs=4,
                       batch_size=32, progress=False)

    np.testing.assert_allclose(head_history.iteration_cost, full_history.iteration_cost, rtol=1e-10)
    for name in ("2.W", "2.b"):
        np.testing.assert_allclose(fast.state_dict()[name], full.state_dict()[name], rtol=1e-10, atol=1e-13)
    assert not np.allclose(full.state_dict()["2.W"], _model(2, seed=5).state_dict()["2.W"])   # it trained
    for name in ("0.W", "1.W"):
        np.testing.assert_array_equal(full.state_dict()[name], pretrained.state_dict()[name])


# ---- §4.11: a new softmax head on a CNN trunk, and fine-tuning the last k layers -------------------------
from lamina.transfer import replace_head, unfreeze_last  # noqa: E402


def _cnn(seed=0):
    lm.manual_seed(seed)
    return lm.models.lenet5((16, 16, 1), num_classes=10, variant="modern")   # conv pool conv pool flatten fc fc fc


def test_replace_head_keeps_the_trunk_frozen_and_adds_a_head_sized_from_it(float64):
    pretrained = _cnn()
    model = replace_head(pretrained, 3)
    assert len(model) == len(pretrained)
    assert all(model[i] is pretrained[i] for i in range(len(model) - 1))          # shared, not copied
    head = model[-1]
    assert isinstance(head, lm.nn.Dense) and (head.n_in, head.n_out) == (84, 3) and head.activation is None
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["7.W", "7.b"]
    X = np.random.default_rng(0).standard_normal((4, 16, 16, 1))
    trunk, _ = split_model(model, head_layers=1)
    features = predict(trunk, X)
    np.testing.assert_allclose(predict(model, X), features @ head.W.numpy() + head.b.numpy(), rtol=1e-12)
    same = replace_head(_cnn(), 3, input_shape=(16, 16, 1))                        # width from the shapes
    assert same[-1].n_in == 84


def test_replace_head_redesigns_several_layers_and_can_leave_the_trunk_trainable(float64):
    model = replace_head(_cnn(), 4, head_layers=3, hidden=(32,), activation="tanh", input_shape=(16, 16, 1),
                         freeze_trunk=False, name="digits_transfer")
    assert model.name == "digits_transfer" and len(model) == 7
    first, last = model[5], model[6]
    assert (first.n_in, first.n_out, first.activation_name) == (16, 32, "tanh")    # Flatten of 1x1x16
    assert (last.n_in, last.n_out, last.activation_name) == (32, 4, None)
    assert all(p.requires_grad for p in model.parameters())
    assert predict(model, np.zeros((2, 16, 16, 1))).shape == (2, 4)


def test_training_after_replace_head_changes_only_the_head(float64):
    model = replace_head(_cnn(), 2)
    before = model.state_dict()
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 16, 16, 1))
    y = (X[:, :8].mean(axis=(1, 2, 3)) > X[:, 8:].mean(axis=(1, 2, 3))).astype(np.int64)
    fit(model, lm.losses.SoftmaxCrossEntropy(), lm.optim.Adam(model.parameters(), lr=0.01), Split(X, y), epochs=2,
        batch_size=10, progress=False)
    after = model.state_dict()
    for name in before:
        changed = not np.array_equal(before[name], after[name])
        assert changed == name.startswith("7."), name


def test_unfreeze_last_counts_only_layers_with_parameters(float64):
    model = _cnn()                                          # parameters in layers 0, 2, 5, 6, 7
    assert unfreeze_last(model, 2) == ["6.W", "6.b", "7.W", "7.b"]
    assert unfreeze_last(model, 3) == ["5.W", "5.b", "6.W", "6.b", "7.W", "7.b"]
    assert unfreeze_last(model, 4)[:2] == ["2.W", "2.b"]
    assert unfreeze_last(model, 0) == []
    assert model.num_parameters(trainable_only=True) == 0
    assert len(unfreeze_last(model, 5)) == len(list(model.named_parameters()))
    with pytest.raises(LaminaError, match=r"unfreeze_last: k must be an integer between 0 and 5 \(the layers of "
                                          r"'lenet5' with parameters\), got 6"):
        unfreeze_last(model, 6)


def test_unfreeze_last_keeps_batch_norm_running_averages_untrained_and_fine_tunes_only_those_layers(float64):
    lm.manual_seed(0)
    model = lm.nn.Sequential(lm.nn.Conv2D(1, 4, 3, padding="same"), lm.nn.BatchNorm(4), lm.nn.ReLU(),
                             lm.nn.GlobalAvgPool2D(), lm.nn.Dense(4, 2))
    trainable = unfreeze_last(model, 2)
    assert trainable == ["1.gamma", "1.beta", "4.W", "4.b"]          # not BatchNorm's running averages
    before = model.state_dict()
    rng = np.random.default_rng(2)
    X = rng.standard_normal((24, 5, 5, 1))
    fit(model, lm.losses.SoftmaxCrossEntropy(), lm.optim.SGD(model.parameters(), lr=0.1),
        Split(X, (X.mean(axis=(1, 2, 3)) > 0).astype(np.int64)), epochs=1, batch_size=8, progress=False)
    after = model.state_dict()
    assert np.array_equal(before["0.W"], after["0.W"]) and np.array_equal(before["0.b"], after["0.b"])
    assert not np.array_equal(before["4.W"], after["4.W"])


def test_replace_head_errors():
    model = _cnn()
    with pytest.raises(LaminaError, match="replace_head: head_layers must be between 1 and 7 for a model of 8 "
                                          "layers, got 8"):
        replace_head(model, 3, head_layers=8)
    with pytest.raises(LaminaError, match="replace_head: num_classes must be a positive integer, got 0"):
        replace_head(model, 0)
    with pytest.raises(LaminaError, match=r"replace_head: the trunk gives outputs of shape \(None, 1, 1, 16\), not "
                                          r"\(m, features\)"):
        replace_head(model, 3, head_layers=4, input_shape=(16, 16, 1))
    with pytest.raises(LaminaError, match="replace_head: cannot tell the trunk's output width from 'flatten_4' "
                                          r"\(it has no n_in\); pass input_shape"):
        replace_head(model, 3, head_layers=4)
