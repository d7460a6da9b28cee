"""Model builders (`lamina.models`, §4.7–4.8).

The expected parameter counts for 224×224×3 inputs and 1000 classes are torchvision's published
counts for the same architectures (torchvision's model documentation, "num_params"; torchvision
itself is not installed here). torchvision keeps BatchNorm's running mean and variance as buffers,
not parameters, so they compare with `num_parameters(trainable_only=True)`; the totals of the
ResNets also count those running averages.
"""
import numpy as np
import pytest

import lamina as lm
from lamina import models

TORCHVISION_COUNTS = {
    "alexnet": 61_100_840,
    "vgg16": 138_357_544,
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
}


@pytest.mark.parametrize("name", sorted(TORCHVISION_COUNTS))
def test_parameter_counts_equal_torchvisions(name):
    model = getattr(models, name)(input_shape=(224, 224, 3), num_classes=1000)
    assert isinstance(model, lm.nn.Sequential)
    assert model.num_parameters(trainable_only=True) == TORCHVISION_COUNTS[name]
    assert model.output_shape((None, 224, 224, 3)) == (None, 1000)
    text = model.summary((224, 224, 3), print_fn=None)
    assert "(None, 1000)" in text.splitlines()[-5]
    assert f"Trainable params: {TORCHVISION_COUNTS[name]:,}" in text


@pytest.mark.parametrize("variant", ["original", "modern"])
def test_lenet5(variant):
    model = models.lenet5(input_shape=(32, 32, 1), num_classes=10, variant=variant)
    assert model.num_parameters() == 61_706
    text = model.summary((32, 32, 1), print_fn=None)
    shapes = [model[0].output_shape((None, 32, 32, 1))]
    assert shapes == [(None, 28, 28, 6)]
    assert "(None, 5, 5, 16)" in text and "(None, 10)" in text.splitlines()[-5]
    kinds = {type(layer).__name__ for layer in model}
    assert ("AvgPool2D" in kinds) == (variant == "original")
    assert ("MaxPool2D" in kinds) == (variant == "modern")
    with pytest.raises(ValueError):
        models.lenet5(variant="newer")


def test_resnet_block_layout():
    r50 = models.resnet50(input_shape=(64, 64, 3), num_classes=7)
    blocks = [layer for layer in r50 if isinstance(layer, lm.nn.ResidualBlock)]
    assert len(blocks) == 16 and all(b.kind == "bottleneck" for b in blocks)
    assert [b.projection for b in blocks].count(True) == 4
    assert r50.output_shape((None, 64, 64, 3)) == (None, 7)
    r34 = models.resnet34(input_shape=(64, 64, 3), num_classes=7)
    assert len([layer for layer in r34 if isinstance(layer, lm.nn.ResidualBlock)]) == 16


def test_resnet18_forward_at_a_small_input():
    lm.manual_seed(0)
    model = models.resnet18(input_shape=(32, 32, 3), num_classes=5)
    x = lm.tensor(np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32))
    out = model(x)
    assert tuple(out.shape) == (2, 5)
    assert np.all(np.isfinite(out.numpy()))
    model.eval()
    with lm.no_grad():
        assert tuple(model(x).shape) == (2, 5)


def test_small_inputs_give_other_flatten_widths():
    assert models.alexnet(input_shape=(127, 127, 3), num_classes=3).output_shape((None, 127, 127, 3)) == (None, 3)
    assert models.vgg16(input_shape=(32, 32, 3), num_classes=3)[-5].n_in == 512


def test_lenet5_modern_learns_digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(digits.target))[:256]
    images = digits.images[idx] / 16.0
    x = np.kron(images, np.ones((4, 4)))[..., None].astype(np.float32)  # 8×8 -> 32×32×1
    y = digits.target[idx]
    lm.manual_seed(0)
    model = models.lenet5(input_shape=(32, 32, 1), num_classes=10, variant="modern")
    opt = lm.optim.Adam(model.parameters(), lr=0.003)
    xb, yb = lm.tensor(x), lm.tensor(y)
    losses = []
    for step in range(15):
        model.zero_grad()
        loss = lm.functional.softmax_cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append(float(loss.numpy()))
    assert losses[-1] < 0.5 * losses[0], losses
