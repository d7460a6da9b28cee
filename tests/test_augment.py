"""Data augmentation (§4.12): the shared bilinear resampler against scipy's map_coordinates and
PyTorch's grid_sample, each transform's defining property, seeding, composition, registration
and argument errors."""
import numpy as np
import pytest
import torch
from scipy import ndimage

import lamina
from lamina import augment as A
from lamina import registry
from lamina.errors import ConfigError, LaminaError, ShapeError, UnknownNameError


def _batch(shape=(4, 7, 9, 3), seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _map_coordinates(X, rows, cols, fill):
    return np.stack([np.stack([ndimage.map_coordinates(X[k, :, :, c], [rows[k], cols[k]], order=1,
                                                       mode="grid-constant", cval=fill)
                               for c in range(X.shape[-1])], -1) for k in range(len(X))])


# ---- the resampler ---------------------------------------------------------------------------
@pytest.mark.parametrize("fill", [0.0, 0.75])
def test_bilinear_sample_matches_scipy_map_coordinates(fill):
    X = _batch()
    rng = np.random.default_rng(1)
    rows, cols = rng.uniform(-2.5, 9.5, (4, 5, 6)), rng.uniform(-2.5, 11.5, (4, 5, 6))
    rows[0, 0, :3] = [0.0, 6.0, 3.0]                # whole-pixel and edge coordinates
    cols[0, 0, :3] = [0.0, 8.0, -1.0]
    np.testing.assert_allclose(A.bilinear_sample(X, rows, cols, fill), _map_coordinates(X, rows, cols, fill),
                               rtol=0, atol=1e-12)


def test_bilinear_sample_matches_torch_grid_sample():
    X = _batch((3, 6, 5, 2), seed=2)
    rng = np.random.default_rng(3)
    rows, cols = rng.uniform(-1.5, 6.5, (3, 4, 7)), rng.uniform(-1.5, 5.5, (3, 4, 7))
    grid = torch.from_numpy(np.stack([2 * cols / (5 - 1) - 1, 2 * rows / (6 - 1) - 1], -1))
    ref = torch.nn.functional.grid_sample(torch.from_numpy(X).permute(0, 3, 1, 2), grid, mode="bilinear",
                                          padding_mode="zeros", align_corners=True).permute(0, 2, 3, 1).numpy()
    np.testing.assert_allclose(A.bilinear_sample(X, rows, cols), ref, rtol=0, atol=1e-12)


def test_bilinear_sample_at_the_pixel_grid_is_the_image_and_keeps_float32():
    X = _batch(dtype=np.float32)
    i, j = np.meshgrid(np.arange(7), np.arange(9), indexing="ij")
    out = A.bilinear_sample(X, i, j)                  # (H, W) coordinates broadcast over the batch
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, X)


def test_bilinear_sample_errors():
    with pytest.raises(ShapeError, match=r"bilinear_sample: expected a float NHWC batch .* got an array of shape "
                                         r"\(7, 9\)"):
        A.bilinear_sample(np.zeros((7, 9)), np.zeros((1, 2, 2)), np.zeros((1, 2, 2)))
    with pytest.raises(ShapeError, match=r"bilinear_sample: rows and cols must have shape \(m, H_out, W_out\)"):
        A.bilinear_sample(_batch(), np.zeros((3, 2, 2)), np.zeros((3, 2, 2)))


def test_gaussian_smooth_matches_scipy_gaussian_filter():
    field = np.random.default_rng(4).uniform(-1, 1, (2, 2, 10, 12))
    for sigma in (0.7, 1.5, 4.0):                     # 4σ wider than the image: repeated mirroring
        np.testing.assert_allclose(A.gaussian_smooth(field, sigma),
                                   ndimage.gaussian_filter(field, (0, 0, sigma, sigma), mode="reflect"),
                                   rtol=0, atol=1e-12)


# ---- the transforms' defining properties -------------------------------------------------------
def test_random_mirror_flips_chosen_examples_and_twice_is_identity():
    X = _batch()
    out = A.RandomMirror(p=1.0)(X, np.random.default_rng(0))
    np.testing.assert_array_equal(out, X[:, :, ::-1])
    np.testing.assert_array_equal(A.RandomMirror(p=1.0)(out, np.random.default_rng(5)), X)
    np.testing.assert_array_equal(A.RandomMirror(p=0.0)(X, np.random.default_rng(0)), X)
    many = _batch((400, 2, 2, 1), seed=6)
    flipped = np.all(A.RandomMirror(p=0.3)(many, np.random.default_rng(7)) != many, axis=(1, 2, 3))
    assert 0.22 < flipped.mean() < 0.38
    for k, was_flipped in enumerate(flipped):
        assert np.array_equal(A.RandomMirror(p=0.3)(many, np.random.default_rng(7))[k],
                              many[k, :, ::-1] if was_flipped else many[k])


def _windows(image, crop):
    h, w = crop.shape[:2]
    return [(t, l) for t in range(image.shape[0] - h + 1) for l in range(image.shape[1] - w + 1)
            if np.array_equal(image[t:t + h, l:l + w], crop)]


def test_random_crop_shape_and_contents():
    X = _batch((5, 7, 9, 2), seed=1)
    out = A.RandomCrop((4, 5))(X, np.random.default_rng(0))
    assert out.shape == (5, 4, 5, 2)
    for k in range(5):                                 # each crop is a window of its own image
        assert len(_windows(X[k], out[k])) == 1
    crops = A.RandomCrop((4, 5))(np.repeat(X[:1], 300, 0), np.random.default_rng(1))
    positions = {_windows(X[0], c)[0] for c in crops}
    assert positions == {(t, l) for t in range(4) for l in range(5)}      # every window is drawn
    padded = A.RandomCrop(9, padding=1, fill=-5.0)(X, np.random.default_rng(2))
    assert padded.shape == (5, 9, 9, 2)
    for k in range(5):
        big = np.pad(X[k], ((1, 1), (1, 1), (0, 0)), constant_values=-5.0)
        assert len(_windows(big, padded[k])) == 1


def test_random_crop_same_size_without_padding_is_identity():
    X = _batch()
    np.testing.assert_array_equal(A.RandomCrop((7, 9))(X, np.random.default_rng(0)), X)


@pytest.mark.parametrize("degrees,k", [(90, 1), (-90, -1), (180, 2)])
def test_rotation_by_right_angles_equals_rot90(degrees, k):
    X = _batch((3, 6, 6, 2))
    out = A.RandomRotation((degrees, degrees))(X, np.random.default_rng(0))
    np.testing.assert_allclose(out, np.rot90(X, k, axes=(1, 2)), rtol=0, atol=1e-12)


def test_rotation_is_counter_clockwise_and_matches_the_resampler_formula():
    X = np.zeros((1, 5, 5, 1))
    X[0, 2, 4, 0] = 1.0                                # right of the centre
    up = A.RandomRotation((90, 90))(X, np.random.default_rng(0))
    assert up[0, 0, 2, 0] == pytest.approx(1.0) and up.sum() == pytest.approx(1.0)   # goes to the top
    X = _batch((2, 6, 7, 1))
    theta = np.deg2rad(np.random.default_rng(3).uniform(-30, 30, 2))
    dy, dx = np.meshgrid(np.arange(6) - 2.5, np.arange(7) - 3.0, indexing="ij")
    rows = 2.5 + np.cos(theta)[:, None, None] * dy + np.sin(theta)[:, None, None] * dx
    cols = 3.0 - np.sin(theta)[:, None, None] * dy + np.cos(theta)[:, None, None] * dx
    np.testing.assert_allclose(A.RandomRotation(30)(X, np.random.default_rng(3)), _map_coordinates(X, rows, cols, 0),
                               rtol=0, atol=1e-12)


def test_shear_moves_a_known_point():
    X = np.zeros((1, 7, 7, 1))
    X[0, 5, 3, 0] = 2.0                                # two rows below the centre (3, 3)
    out = A.RandomShear((45, 45))(X, np.random.default_rng(0))
    assert out[0, 5, 5, 0] == pytest.approx(2.0)       # x' = x + tan(45°)·dy = 3 + 2
    assert out.sum() == pytest.approx(2.0)
    X[0, 3, 1, 0] = 1.0                                # on the centre row: does not move
    out = A.RandomShear((-30, -30))(X, np.random.default_rng(0))
    assert out[0, 3, 1, 0] == pytest.approx(1.0)
    shift = 2 * np.tan(np.deg2rad(-30))                # -1.1547: between columns 1 and 2
    assert out[0, 5, 1, 0] == pytest.approx(2.0 * (1 - abs(3 + shift - 1)))
    assert out[0, 5, 2, 0] == pytest.approx(2.0 * (1 - abs(3 + shift - 2)))


def test_local_warp_is_a_smooth_bounded_displacement():
    X = _batch((2, 12, 12, 1))
    assert np.array_equal(A.LocalWarp(alpha=0.0, sigma=2.0)(X, np.random.default_rng(0)), X)
    warp = A.LocalWarp(alpha=4.0, sigma=2.0)
    delta = warp.displacement(64, 12, 12, np.random.default_rng(1))
    assert delta.shape == (64, 2, 12, 12) and np.abs(delta).max() <= 4.0
    neighbours = np.corrcoef(delta[:, :, :, :-1].ravel(), delta[:, :, :, 1:].ravel())[0, 1]
    assert neighbours > 0.8                            # smooth: neighbours move together
    rng = np.random.default_rng(2)
    delta = warp.displacement(2, 12, 12, np.random.default_rng(2))
    i, j = np.meshgrid(np.arange(12), np.arange(12), indexing="ij")
    np.testing.assert_allclose(warp(X, rng), _map_coordinates(X, i + delta[:, 0], j + delta[:, 1], 0),
                               rtol=0, atol=1e-12)


def test_color_shift_adds_one_bounded_constant_per_example_and_channel():
    X = _batch((50, 4, 5, 3), dtype=np.float32)
    out = A.ColorShift([0.1, 0.2, 0.0])(X, np.random.default_rng(0))
    assert out.dtype == np.float32
    delta = out.astype(np.float64) - X
    per_channel = delta[:, :1, :1, :]
    np.testing.assert_allclose(delta, np.broadcast_to(per_channel, delta.shape), atol=1e-6)
    bound = np.array([0.1, 0.2, 0.0])
    assert np.all(np.abs(per_channel[:, 0, 0]) <= bound + 1e-6)
    assert np.abs(per_channel[:, 0, 0, 1]).max() > 0.15            # the range is used
    assert len(np.unique(per_channel[:, 0, 0, 0].round(6))) == 50   # one draw per example
    with pytest.raises(ShapeError, match="color_shift: max_shift has 2 values but the images have 3 channels"):
        A.ColorShift([0.1, 0.2])(X, np.random.default_rng(0))


def test_pca_color_fits_the_channel_covariance():
    rng = np.random.default_rng(0)
    mix = np.array([[1.0, 0.5, 0.2], [0.0, 0.8, 0.3], [0.0, 0.0, 0.4]])
    X = (rng.standard_normal((40, 6, 6, 3)) @ mix).astype(np.float32)
    pca = A.PCAColor(std=0.1).fit(X)
    cov = np.cov(X.reshape(-1, 3).astype(np.float64), rowvar=False)
    lam, P = np.linalg.eigh(cov)
    np.testing.assert_allclose(pca.eigenvalues, lam[::-1], rtol=1e-10)
    np.testing.assert_allclose(np.abs(pca.eigenvectors.T @ P[:, ::-1]), np.eye(3), atol=1e-8)


def test_pca_color_offsets_lie_along_the_eigenvectors_with_std_times_eigenvalue():
    rng = np.random.default_rng(1)
    direction = np.array([0.6, 0.8, 0.0])
    X = rng.standard_normal((30, 5, 5, 1)) * direction + 0.5           # colours on one line: rank 1
    pca = A.PCAColor(std=0.2).fit(X)
    assert pca.eigenvalues[1:] == pytest.approx([0, 0], abs=1e-12)
    out = pca(np.zeros((4000, 2, 2, 3)), np.random.default_rng(2))
    delta = out[:, 0, 0, :]
    np.testing.assert_allclose(out, np.broadcast_to(delta[:, None, None], out.shape))
    along = delta @ direction
    np.testing.assert_allclose(delta, along[:, None] * direction, atol=1e-10)   # in the span of p_1
    # α ~ N(0, std): the offsets along p_1 are α·λ_1, with standard deviation std·λ_1
    assert np.std(along) == pytest.approx(0.2 * pca.eigenvalues[0], rel=0.05)
    assert np.mean(along) == pytest.approx(0.0, abs=0.02 * pca.eigenvalues[0])
    full = A.PCAColor(std=0.3, eigenvalues=[2.0, 0.5, 0.1], eigenvectors=np.eye(3)[:, [2, 0, 1]])
    delta = full(np.zeros((6000, 1, 1, 3)), np.random.default_rng(3))[:, 0, 0]
    np.testing.assert_allclose(delta.std(axis=0), 0.3 * np.array([0.5, 0.1, 2.0]), rtol=0.05)


def test_pca_color_needs_fitting_and_matching_channels():
    with pytest.raises(LaminaError, match=r"pca_color: not fitted; call fit\(X_train\)"):
        A.PCAColor()(np.zeros((1, 2, 2, 3)), np.random.default_rng(0))
    pca = A.PCAColor().fit(_batch((2, 3, 3, 3)))
    with pytest.raises(ShapeError, match="pca_color: fitted on 3 channels but the images have 1"):
        pca(np.zeros((1, 2, 2, 1)), np.random.default_rng(0))


# ---- seeding, composition, registration, errors ------------------------------------------------------
ALL = [A.RandomMirror(), A.RandomCrop(5, padding=2), A.RandomRotation(20), A.RandomShear(15),
       A.LocalWarp(3.0, 1.5), A.ColorShift(0.2), A.PCAColor(0.1, [1.0, 0.5, 0.1], np.eye(3))]


@pytest.mark.parametrize("transform", ALL, ids=lambda t: t.name)
def test_same_seed_same_batch_and_input_untouched(transform):
    X = _batch()
    before = X.copy()
    first = transform(X, np.random.default_rng(42))
    np.testing.assert_array_equal(first, transform(X, np.random.default_rng(42)))
    assert not np.array_equal(first, transform(X, np.random.default_rng(43)))
    np.testing.assert_array_equal(X, before)
    assert first.dtype == X.dtype
    assert transform.name in repr(transform) or type(transform).__name__ in repr(transform)


def test_compose_applies_in_order_from_one_generator():
    X = _batch()
    chain = A.Compose([A.RandomMirror(1.0), A.ColorShift(0.5)])
    rng = np.random.default_rng(9)
    expected = A.ColorShift(0.5)(A.RandomMirror(1.0)(X, rng), rng)
    np.testing.assert_array_equal(chain(X, np.random.default_rng(9)), expected)
    pca = A.PCAColor()
    chain = A.Compose([A.RandomMirror(), pca])
    assert not chain.fitted
    chain.fit(X)
    assert chain.fitted and pca.eigenvalues.shape == (3,)


def test_registered_by_name_and_built_from_config():
    assert set(registry.names("augmentations")) >= {"random_mirror", "random_crop", "random_rotation",
                                                    "random_shear", "local_warp", "color_shift", "pca_color"}
    chain = A.from_config([{"type": "random_mirror"}, {"type": "random-crop", "size": 8, "padding": 1}])
    assert [type(t) for t in chain.transforms] == [A.RandomMirror, A.RandomCrop]
    assert chain.transforms[1].size == (8, 8) and chain.transforms[1].padding == 1
    with pytest.raises(ConfigError, match=r"\[data\] augment: entry 1 must be a table with a 'type'"):
        A.from_config([{"type": "random_mirror"}, {"size": 3}])
    with pytest.raises(ConfigError, match=r"entry 0: cannot build augmentation 'random_crop' .*size must be"):
        A.from_config([{"type": "random_crop", "size": 0}])
    with pytest.raises(ConfigError, match="cannot build augmentation 'random_mirror' with {'q': 1}"):
        A.from_config([{"type": "random_mirror", "q": 1}])
    with pytest.raises(UnknownNameError, match="unknown augmentation 'random_flip'"):
        A.from_config([{"type": "random_flip"}])


@pytest.mark.parametrize("build,message", [
    (lambda: A.RandomMirror(p=1.5), r"random_mirror: p must be a number in \[0, 1\], got 1.5"),
    (lambda: A.RandomCrop(size=(3, -1)), r"random_crop: size must be a positive integer or a pair \(h, w\) of "
                                         r"them, got \(3, -1\)"),
    (lambda: A.RandomCrop(size=3, padding=-1), "random_crop: padding must be a non-negative integer, got -1"),
    (lambda: A.RandomRotation(degrees=(10, -10)), r"random_rotation: degrees must be a pair \(low, high\) with "
                                                  r"low <= high, got \(10, -10\)"),
    (lambda: A.RandomRotation(degrees="ten"), r"random_rotation: degrees must be a number in \[0, 360"),
    (lambda: A.RandomShear(shear=90), r"random_shear: shear must be a number in \[0, 90\), got 90"),
    (lambda: A.LocalWarp(alpha=1.0, sigma=0), r"local_warp: sigma must be a number in \(0, inf\], got 0"),
    (lambda: A.ColorShift(max_shift=-0.1), r"color_shift: max_shift must be a number in \[0, inf\], got -0.1"),
    (lambda: A.PCAColor(eigenvalues=[1.0]), "pca_color: give both eigenvalues and eigenvectors"),
    (lambda: A.PCAColor(eigenvalues=[1.0, 2.0], eigenvectors=np.eye(3)),
     r"pca_color: expected eigenvalues \(n_C,\) and eigenvectors \(n_C, n_C\), got shapes \(2,\) and \(3, 3\)"),
])
def test_bad_arguments_name_the_transform_argument_expected_and_got(build, message):
    with pytest.raises(A.AugmentationError, match=message):
        build()


def test_bad_batches_and_generators():
    with pytest.raises(ShapeError, match=r"random_mirror: expected a float NHWC batch .* shape \(2, 3\) and dtype "
                                         r"float64"):
        A.RandomMirror()(np.zeros((2, 3)), np.random.default_rng(0))
    with pytest.raises(ShapeError, match="dtype uint8"):
        A.RandomMirror()(np.zeros((1, 2, 2, 3), np.uint8), np.random.default_rng(0))
    with pytest.raises(A.AugmentationError, match=r"random_crop: rng must be a numpy.random.Generator .* got int"):
        A.RandomCrop(2)(_batch(), 0)
    with pytest.raises(ShapeError, match="random_crop: size 8x8 is larger than the 7x9 images padded by 0"):
        A.RandomCrop(8)(_batch(), np.random.default_rng(0))


def test_exported():
    assert lamina.augment is A
