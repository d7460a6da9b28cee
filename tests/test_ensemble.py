"""Multi-crop evaluation and ensembling (§4.14) with hand-made models whose outputs are known:
the crops are the right windows, the probabilities are averaged softmaxes (PyTorch's softmax as
the oracle), and bad arguments name what was expected."""
import numpy as np
import pytest
import torch

import lamina as lm
from lamina.ensemble import crop_views, ensemble_predict, multi_crop_predict


@pytest.fixture(autouse=True)
def float64():
    with lm.set_default_dtype("float64"):
        yield


def _linear(n_in, W, b, flatten=True, softmax=False):
    """A model computing logits X·W + b on the flattened image (or on its channel means)."""
    first = lm.nn.Flatten() if flatten else lm.nn.GlobalAvgPool2D()
    layers = [first, lm.nn.Dense(n_in, W.shape[1])] + ([lm.nn.Softmax()] if softmax else [])
    model = lm.nn.Sequential(*layers)
    model.load_state_dict({"1.W": W, "1.b": b})
    return model


def _softmax(z):
    return torch.softmax(torch.from_numpy(z), dim=-1).numpy()


def _images(shape=(3, 6, 7, 2), seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def test_crop_views_are_the_corners_the_centre_and_their_mirrors():
    X = _images((2, 6, 7, 2))
    views = crop_views(X, (4, 3), "10-crop")
    expected = [X[:, 0:4, 0:3], X[:, 0:4, 4:7], X[:, 2:6, 0:3], X[:, 2:6, 4:7], X[:, 1:5, 2:5]]
    expected += [v[:, :, ::-1] for v in expected]
    assert len(views) == 10
    for got, want in zip(views, expected):
        np.testing.assert_array_equal(got, want)
    assert [v.shape for v in crop_views(X, 4, "5-crop")] == [(2, 4, 4, 2)] * 5
    (centre,) = crop_views(X, 4, "center")
    np.testing.assert_array_equal(centre, X[:, 1:5, 1:5])


def test_multi_crop_averages_the_softmax_of_each_crop():
    rng = np.random.default_rng(1)
    X = _images()
    W, b = rng.standard_normal((3 * 3 * 2, 4)), rng.standard_normal(4)
    model = _linear(18, W, b)
    windows = [(0, 0), (0, 4), (3, 0), (3, 4), (1, 2)]
    crops = [X[:, r:r + 3, c:c + 3] for r, c in windows]
    crops += [c[:, :, ::-1] for c in crops]
    expected = {n: np.mean([_softmax(c.reshape(3, -1) @ W + b) for c in crops[:n]], axis=0) for n in (5, 10)}
    np.testing.assert_allclose(multi_crop_predict(model, X, 3, "5-crop"), expected[5], rtol=1e-10)
    np.testing.assert_allclose(multi_crop_predict(model, X, 3, "10-crop"), expected[10], rtol=1e-10)
    np.testing.assert_allclose(multi_crop_predict(model, X, 3, "center"), _softmax(crops[4].reshape(3, -1) @ W + b),
                               rtol=1e-10)
    assert multi_crop_predict(model, X, 3).sum(axis=1) == pytest.approx(np.ones(3))


def test_ten_crops_are_five_crops_of_the_image_and_of_its_mirror():
    rng = np.random.default_rng(2)
    X = _images((4, 8, 8, 1), seed=3)                  # (8 - 4) even: the mirrored centre is the centre
    model = _linear(16, rng.standard_normal((16, 3)), rng.standard_normal(3))
    both = (multi_crop_predict(model, X, 4, "5-crop") + multi_crop_predict(model, X[:, :, ::-1], 4, "5-crop")) / 2
    np.testing.assert_allclose(multi_crop_predict(model, X, 4, "10-crop"), both, rtol=1e-12)


def test_a_whole_image_centre_crop_is_the_plain_prediction_and_probabilities_pass_through():
    rng = np.random.default_rng(4)
    X = _images()
    W, b = rng.standard_normal((2, 5)), rng.standard_normal(5)
    logits_model, probs_model = _linear(2, W, b, flatten=False), _linear(2, W, b, flatten=False, softmax=True)
    plain = _softmax(X.mean(axis=(1, 2)) @ W + b)
    np.testing.assert_allclose(multi_crop_predict(logits_model, X, (6, 7), "center"), plain, rtol=1e-10)
    np.testing.assert_allclose(multi_crop_predict(probs_model, X, (6, 7), "center", outputs="probabilities"), plain,
                               rtol=1e-10)


def test_ensemble_averages_the_models_probabilities():
    rng = np.random.default_rng(5)
    X = _images((5, 3, 3, 2))
    params = [(rng.standard_normal((18, 4)), rng.standard_normal(4)) for _ in range(3)]
    models = [_linear(18, W, b) for W, b in params]
    expected = np.mean([_softmax(X.reshape(5, -1) @ W + b) for W, b in params], axis=0)
    np.testing.assert_allclose(ensemble_predict(models, X), expected, rtol=1e-10)
    np.testing.assert_allclose(ensemble_predict(models[:1], X), _softmax(X.reshape(5, -1) @ params[0][0]
                                                                          + params[0][1]), rtol=1e-10)
    with_softmax = [_linear(18, W, b, softmax=True) for W, b in params]
    np.testing.assert_allclose(ensemble_predict(with_softmax, X, outputs="probabilities"), expected, rtol=1e-10)


def test_ensemble_of_multi_crop_predictions():
    rng = np.random.default_rng(6)
    X = _images((3, 5, 5, 1))
    models = [_linear(9, rng.standard_normal((9, 2)), rng.standard_normal(2)) for _ in range(2)]
    expected = (multi_crop_predict(models[0], X, 3, "5-crop") + multi_crop_predict(models[1], X, 3, "5-crop")) / 2
    np.testing.assert_allclose(ensemble_predict(models, X, crop_size=3, crops="5-crop"), expected, rtol=1e-12)


def test_an_ensemble_beats_its_average_member_on_noisy_models():
    """Averaging independent errors (§4.14): members that each see the true scores plus their own
    noise are right less often than their average."""
    rng = np.random.default_rng(7)
    m, K = 400, 5
    X = rng.standard_normal((m, 1, 1, K))
    y = X.reshape(m, K).argmax(axis=1)
    members = [_linear(K, np.eye(K) + 0.9 * rng.standard_normal((K, K)), np.zeros(K)) for _ in range(9)]
    single = np.mean([(ensemble_predict([model], X).argmax(1) == y).mean() for model in members])
    assert (ensemble_predict(members, X).argmax(1) == y).mean() > single + 0.05


def test_errors_name_the_argument_expected_and_got():
    X = _images()
    model = _linear(2, np.ones((2, 3)), np.zeros(3), flatten=False)
    with pytest.raises(lm.LaminaError, match="multi_crop: crops must be one of 'center', '5-crop', '10-crop', "
                                             "got '3-crop'"):
        multi_crop_predict(model, X, 3, "3-crop")
    with pytest.raises(lm.ShapeError, match="multi_crop: crop_size 7x7 is larger than the 6x7 images"):
        multi_crop_predict(model, X, 7)
    with pytest.raises(lm.LaminaError, match=r"multi_crop: crop_size must be a positive integer or a pair \(h, w\) "
                                             r"of them, got 0"):
        crop_views(X, 0)
    with pytest.raises(lm.ShapeError, match=r"multi_crop: expected NHWC images .* got shape \(3, 6\)"):
        crop_views(np.zeros((3, 6)), 2)
    with pytest.raises(lm.LaminaError, match="ensemble_predict: models must hold at least one model, got none"):
        ensemble_predict([], X)
    with pytest.raises(lm.LaminaError, match="ensemble: outputs must be one of 'logits', 'probabilities', got 'raw'"):
        ensemble_predict([model], X, outputs="raw")
    other = _linear(2, np.ones((2, 4)), np.zeros(4), flatten=False)
    with pytest.raises(lm.ShapeError, match=r"ensemble_predict: model .* gives shape \(3, 4\), the first model "
                                            r"\(3, 3\); all models must predict the same classes"):
        ensemble_predict([model, other], X)
    with pytest.raises(lm.ShapeError, match=r"ensemble: model .* must output \(m, K\) class scores, got shape "
                                            r"\(3, 6, 7, 2\)"):
        ensemble_predict([lm.nn.Sequential(lm.nn.ReLU())], X)
