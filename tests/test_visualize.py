"""Visualizing units (§4.22, "what are deep ConvNets learning"): receptive-field arithmetic against
hand-computed cases and against autograd (which input pixels a unit depends on), the top-k patches
against a brute-force search, and the patch grid image."""
import numpy as np
import pytest
from PIL import Image

import lamina as lm
from lamina.errors import LaminaError
from lamina.nn import AvgPool2D, BatchNorm, Conv2D, Dense, Flatten, MaxPool2D, ReLU, ResidualBlock, Sequential
from lamina.visualize import patch_grid, receptive_field, save_patch_grid, top_patches


def _rf(layers, layer=-1, hw=(32, 32)):
    rf = receptive_field(Sequential(*layers), layer, hw)
    return rf.size, rf.jump, rf.offset


def test_receptive_field_hand_computed_cases():
    lm.manual_seed(0)
    # one 3×3 valid convolution: each unit sees 3×3 pixels starting at its own position
    assert _rf([Conv2D(1, 1, 3)]) == (3, 1, (0, 0))
    # padding 1 moves the window one pixel up/left (into the padding)
    assert _rf([Conv2D(1, 1, 3, padding=1)]) == (3, 1, (-1, -1))
    # VGG block 1: 3×3 p1, 3×3 p1, 2×2 pool s2: r = 3 → 5 → 6, j = 1 → 1 → 2, offset −1 → −2 → −2
    vgg_block = [Conv2D(3, 4, 3, padding=1), Conv2D(4, 4, 3, padding=1), MaxPool2D(2)]
    assert _rf(vgg_block) == (6, 2, (-2, -2))
    assert _rf(vgg_block, layer=1) == (5, 1, (-2, -2))
    # LeNet-5 start: 5×5 valid, 2×2 pool: r = 5 + 1·1 = 6, j = 2; then 5×5: r = 6 + 4·2 = 14, pool: 14 + 1·2 = 16, j 4
    lenet = [Conv2D(1, 6, 5), AvgPool2D(2), Conv2D(6, 16, 5), AvgPool2D(2)]
    assert _rf(lenet, layer=1) == (6, 2, (0, 0))
    assert _rf(lenet) == (16, 4, (0, 0))
    # AlexNet conv1 (11×11, s4, p2) and pool (3, s2): r = 11 + 2·4 = 19, j = 8, offset −2
    assert _rf([Conv2D(3, 4, 11, stride=4, padding=2), MaxPool2D(3, stride=2)], hw=(67, 67)) == (19, 8, (-2, -2))
    # "same" with stride 2 pads by size: n = 6 → total 1 → (0, 1); n = 5 → total 2 → (1, 1)
    assert _rf([Conv2D(1, 1, 3, stride=2, padding="same")], hw=(6, 5)) == (3, 2, (0, -1))
    # element-wise layers change nothing
    assert _rf([Conv2D(1, 2, 3), ReLU(), BatchNorm(2), MaxPool2D(2)]) == _rf([Conv2D(1, 2, 3), MaxPool2D(2)])
    # a basic residual block with stride 2: 3×3 s2 p1 then 3×3 p1: r = 3 + 2·2 = 7, j = 2, offset −1 − 1·2 = −3
    assert _rf([ResidualBlock(2, 2, stride=2)]) == (7, 2, (-3, -3))
    rf = receptive_field(Sequential(*vgg_block), 2, (7, 9))
    assert rf.output_hw == (3, 4)
    assert rf.window(1, 3) == (0, 4, 6, 10) and rf.box(1, 3) == (0, 4, 6, 9)
    assert rf.box(0, 0) == (0, 0, 4, 4)


def test_receptive_field_errors():
    lm.manual_seed(0)
    model = Sequential(Conv2D(1, 2, 3), Flatten(), Dense(8, 2))
    with pytest.raises(LaminaError, match="layer 'flatten_1' .*no local receptive field"):
        receptive_field(model, 2, (4, 4))
    with pytest.raises(LaminaError, match="no layer named 'conv'"):
        receptive_field(model, "conv", (4, 4))


@pytest.mark.parametrize("layers,hw", [
    (lambda: [Conv2D(1, 2, 3, padding=1), AvgPool2D(2), Conv2D(2, 3, 3, stride=2)], (13, 11)),
    (lambda: [Conv2D(1, 2, 5, stride=2, padding="same"), Conv2D(2, 2, 3, padding=2), AvgPool2D(3, stride=2)], (12, 9)),
    (lambda: [Conv2D(1, 2, 3, stride=2, padding=1), Conv2D(2, 3, 2), AvgPool2D(2, stride=1, padding=1)], (10, 10)),
], ids=["pad-pool-stride", "same-stride", "pool-padding"])
def test_receptive_field_is_where_the_unit_depends_on_the_input(layers, hw):
    """The input pixels with a non-zero ∂a/∂x (autograd, linear layers, random weights) are exactly the box."""
    rng = np.random.default_rng(0)
    with lm.set_default_dtype("float64"):
        lm.manual_seed(1)
        model = Sequential(*layers())
        rf = receptive_field(model, -1, hw)
        x = lm.tensor(rng.standard_normal((1, *hw, 1)), requires_grad=True)
        out = model(x)
        assert out.shape[1:3] == rf.output_hw
        for i, j in [(0, 0), (rf.output_hw[0] - 1, rf.output_hw[1] - 1), (rf.output_hw[0] // 2, 0)]:
            x.grad = None
            out[0, i, j, 0].backward()
            depends = np.abs(x.grad.numpy()[0, :, :, 0]) > 1e-12
            expected = np.zeros(hw, bool)
            top, left, bottom, right = rf.box(i, j)
            expected[top:bottom, left:right] = True
            np.testing.assert_array_equal(depends, expected, err_msg=f"unit ({i}, {j}), box {rf.box(i, j)}")
            out = model(x)


def _small_model():
    lm.manual_seed(5)
    return Sequential(Conv2D(1, 4, 3, activation="relu"), MaxPool2D(2), Conv2D(4, 3, 2), Flatten(), Dense(27, 2))


def test_top_patches_equal_a_brute_force_search():
    """Brute force: run the network on every crop the size of the receptive field alone (a 1×1 output
    for valid padding) and rank all (image, row, col) by the unit's activation."""
    rng = np.random.default_rng(2)
    X = rng.standard_normal((6, 8, 8, 1)).astype(np.float32)
    model = _small_model()
    for layer, unit in [(2, 1), (0, 3), ("max_pool2d_1", 0)]:
        depth = {0: 1, "max_pool2d_1": 2, 2: 3}[layer]
        trunk = Sequential(*[model[i] for i in range(depth)])
        rf = receptive_field(model, layer, (8, 8))
        scored = []
        for n in range(6):
            for i in range(rf.output_hw[0]):
                for j in range(rf.output_hw[1]):
                    top, left, bottom, right = rf.window(i, j)
                    crop = X[n:n + 1, top:bottom, left:right]
                    with lm.no_grad():
                        a = trunk(lm.tensor(crop)).numpy()
                    assert a.shape[1:3] == (1, 1)
                    scored.append((-float(a[0, 0, 0, unit]), n, i, j))
        scored.sort()
        patches = top_patches(model, layer, unit, X, k=9, batch_size=4)
        assert len(patches) == 9
        assert [(p.image, p.row, p.col) for p in patches] == [s[1:] for s in scored[:9]]
        np.testing.assert_allclose([p.activation for p in patches], [-s[0] for s in scored[:9]], rtol=1e-5)
        for p in patches:
            top, left, bottom, right = p.box
            np.testing.assert_array_equal(p.pixels, X[p.image, top:bottom, left:right])


def test_top_patches_clip_at_the_borders_and_check_arguments():
    lm.manual_seed(3)
    model = Sequential(Conv2D(1, 2, 3, padding=1), MaxPool2D(2))
    X = np.zeros((2, 6, 6, 1), np.float32)
    X[1, 0, 0, 0] = 5.0
    model[0].W.data = model[0].W.backend.asarray(np.ones((3, 3, 1, 2)), model[0].W.dtype)
    best = top_patches(model, 1, 0, X, k=1)[0]
    assert (best.image, best.row, best.col) == (1, 0, 0)
    assert best.window == (-1, -1, 3, 3) and best.box == (0, 0, 3, 3) and best.pixels.shape == (3, 3, 1)
    assert best.activation == pytest.approx(5.0)
    with pytest.raises(LaminaError, match=r"unit must be a channel of layer 1, 0 to 1, got 2"):
        top_patches(model, 1, 2, X)
    with pytest.raises(LaminaError, match="k must be >= 1"):
        top_patches(model, 1, 0, X, k=0)
    assert model.training  # left as it was


def test_patch_grid_places_and_scales_the_patches(tmp_path):
    lm.manual_seed(3)
    rng = np.random.default_rng(4)
    model = Sequential(Conv2D(3, 4, 3, padding=1, activation="relu"), MaxPool2D(2))
    X = rng.uniform(size=(5, 8, 8, 3)).astype(np.float32)
    patches = top_patches(model, 1, 2, X, k=9)
    grid = patch_grid(patches, normalize=False)
    size, scale = 4, 12  # window 3 + 1 = 4 pixels a side, scaled up to at least 48 pixels
    assert grid.shape == (3 * 48 + 2 * 2, 3 * 48 + 2 * 2, 3)
    for idx, p in enumerate(patches):
        r, c = divmod(idx, 3)
        tile = grid[r * 50:r * 50 + 48:scale, c * 50:c * 50 + 48:scale]
        r0, c0 = p.box[0] - p.window[0], p.box[1] - p.window[1]
        h, w = p.pixels.shape[:2]
        np.testing.assert_allclose(tile[r0:r0 + h, c0:c0 + w], p.pixels, atol=1e-6)
        outside = np.ones((size, size), bool)
        outside[r0:r0 + h, c0:c0 + w] = False
        assert np.all(tile[outside] == 0.5)
    path = save_patch_grid(patches, tmp_path / "grid.png")
    with Image.open(path) as img:
        assert img.size == (148, 148) and img.mode == "RGB"
    normalized = patch_grid(patches)
    assert normalized.min() == pytest.approx(0.0)
    assert normalized.max() == pytest.approx(1.0)
    with pytest.raises(LaminaError, match="got no patches"):
        patch_grid([])


# ---- `lamina visualize-units` ------------------------------------------------------------------------
RECIPE = """
name = "tiny-digits-cnn"
[data]
dataset = "digits"
images = true
[model]
layers = [
  { type = "conv2d", n_C = 4, f = 3, padding = "same", activation = "relu" },
  { type = "max_pool2d", f = 2 },
  { type = "flatten" },
  { type = "dense", n_out = 10 },
]
[loss]
name = "softmax_cross_entropy"
[optimizer]
name = "adam"
lr = 0.01
[training]
epochs = 1
batch_size = 64
seed = 0
"""


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from click.testing import CliRunner

    from lamina.cli import cli

    folder = tmp_path_factory.mktemp("units")
    (folder / "tiny.toml").write_text(RECIPE)
    result = CliRunner().invoke(cli, ["train", str(folder / "tiny.toml"), "--out", str(folder / "run"),
                                      "--no-progress"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return folder / "run"


def _units(*args):
    from click.testing import CliRunner

    from lamina.cli import cli

    return CliRunner().invoke(cli, ["visualize-units", *[str(a) for a in args]], catch_exceptions=False)


def test_visualize_units_writes_the_grid_of_the_top_patches(trained_run, tmp_path):
    from lamina.run import TrainedModel

    out = tmp_path / "grid.png"
    result = _units(trained_run, "--layer", "conv2d_0", "--unit", "1", "--out", out, "--no-progress")
    assert result.exit_code == 0, result.output
    assert "receptive field 3×3 pixels" in result.output and f"wrote {out}" in result.output
    with Image.open(out) as img:
        assert img.size == (148, 148) and img.mode == "L"  # 3×3 cells of 3·16 pixels, 2-pixel gaps
    trained = TrainedModel(trained_run)
    X = trained.recipe.load_data().train.X
    expected = top_patches(trained.model, 0, 1, X, k=9)
    shown = [line.split()[1] for line in result.output.splitlines() if line.strip().startswith("image")]
    assert shown == [str(p.image) for p in expected]


@pytest.mark.parametrize("args,message", [
    (["--layer", "dense_3", "--unit", "0"], "no local receptive field"),
    (["--layer", "conv2d_9", "--unit", "0"], "no layer named 'conv2d_9'"),
    (["--layer", "0", "--unit", "4"], "has 4 units (channels 0 to 3), got 4"),
    (["--layer", "0"], "Missing option '--unit'"),
], ids=["dense", "unknown-layer", "unit", "missing-unit"])
def test_visualize_units_bad_usage_exits_with_2(trained_run, tmp_path, args, message):
    result = _units(trained_run, *args, "--out", tmp_path / "g.png")
    assert result.exit_code == 2 and message in result.output, result.output


def test_visualize_units_needs_a_run_folder(tmp_path):
    result = _units(tmp_path / "nope", "--layer", "0", "--unit", "0", "--out", tmp_path / "g.png")
    assert result.exit_code == 2 and "does not exist" in result.output
    result = _units(tmp_path, "--layer", "0", "--unit", "0", "--out", tmp_path / "g.png")
    assert result.exit_code == 1 and "is not a lamina run folder" in result.output
