"""Model builders (`lamina.models`, §4.7–4.8).

The expected parameter counts for 224×224×3 inputs and 1000 classes are torchvision's published
counts for the same architectures (torchvision's model documentation, "num_params"; torchvision
itself is not installed here). torchvision keeps BatchNorm's running mean and variance as buffers,
not parameters, so they compare with `num_parameters(trainable_only=True)`; the totals of the
ResNets also count those running averages.
"""
import numpy as np
import pytest
import torch

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


# ---- GoogLeNet (§4.10) ---------------------------------------------------------------------------------
# torchvision.models.googlenet's trainable parameter counts (its docs' num_params for aux_logits=False; the
# side branches add 2 × (1×1 conv 128 with BN + FC 2048->1024 + FC 1024->1000) = 6,379,984)
GOOGLENET_TORCHVISION = {False: 6_624_904, True: 13_004_888}


def _paper_googlenet_count(num_classes, aux_logits):
    """Szegedy et al. 2014, Table 1, layer by layer: weights + one bias per output channel, no BN."""
    def conv(f, c_in, c_out):
        return f * f * c_in * c_out + c_out

    def dense(n_in, n_out):
        return n_in * n_out + n_out

    total = conv(7, 3, 64) + conv(1, 64, 64) + conv(3, 64, 192)          # conv 7×7/2; conv 3×3 (reduce 64)
    n_in = 192
    for n_1x1, r3, n_3x3, r5, n_5x5, proj in [(64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64),
                                              (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64),
                                              (128, 128, 256, 24, 64, 64), (112, 144, 288, 32, 64, 64),
                                              (256, 160, 320, 32, 128, 128), (256, 160, 320, 32, 128, 128),
                                              (384, 192, 384, 48, 128, 128)]:
        total += (conv(1, n_in, n_1x1) + conv(1, n_in, r3) + conv(3, r3, n_3x3) + conv(1, n_in, r5)
                  + conv(5, r5, n_5x5) + conv(1, n_in, proj))
        n_in = n_1x1 + n_3x3 + n_5x5 + proj
    total += dense(1024, num_classes)
    if aux_logits:      # 4a (512 channels) and 4d (528): 5×5/3 avg pool -> 4×4 at 224, 1×1 conv 128, FC 1024, FC
        total += sum(conv(1, c, 128) + dense(4 * 4 * 128, 1024) + dense(1024, num_classes) for c in (512, 528))
    return total


@pytest.mark.parametrize("aux_logits", [False, True])
@pytest.mark.parametrize("variant", ["torchvision", "paper"])
def test_googlenet_parameter_counts(variant, aux_logits):
    model = models.googlenet(input_shape=(224, 224, 3), num_classes=1000, aux_logits=aux_logits, variant=variant)
    expected = (GOOGLENET_TORCHVISION[aux_logits] if variant == "torchvision"
                else _paper_googlenet_count(1000, aux_logits))
    assert model.num_parameters(trainable_only=True) == expected
    bn = [layer for _, layer in _walk(model) if isinstance(layer, lm.nn.BatchNorm)]
    assert model.num_parameters() == expected + sum(2 * b.num_features for b in bn)
    assert (len(bn) > 0) == (variant == "torchvision")
    assert model.output_shape((None, 224, 224, 3)) == (None, 1000)
    text = model.summary((224, 224, 3), print_fn=None)
    assert f"Trainable params: {expected:,}" in text
    for row in ["(None, 112, 112, 64)", "(None, 28, 28, 256)", "(None, 14, 14, 512)", "(None, 7, 7, 1024)"]:
        assert row in text
    assert ("on inception4d's output, training only" in text) == aux_logits
    lrn = [layer for _, layer in _walk(model) if isinstance(layer, lm.nn.LocalResponseNorm)]
    assert len(lrn) == (2 if variant == "paper" else 0)
    f_wide = {layer.f_5x5 for _, layer in _walk(model) if isinstance(layer, lm.nn.InceptionModule)}
    assert f_wide == ({3} if variant == "torchvision" else {5})


def _walk(layer, prefix=""):
    for key, child in layer._layers.items():
        yield prefix + key, child
        yield from _walk(child, prefix + key + ".")


def test_googlenet_paper_count_is_not_the_torchvision_count_at_other_class_numbers():
    for classes in (10, 37):
        assert (models.googlenet(num_classes=classes, variant="paper").num_parameters()
                == _paper_googlenet_count(classes, True))
        # each class adds one row to the main FC and to both side-branch FCs: 3·(1024 + 1) per class
        assert (models.googlenet(num_classes=classes).num_parameters(trainable_only=True)
                == GOOGLENET_TORCHVISION[True] - (1000 - classes) * 3 * 1025)


def test_googlenet_small_input_trains_with_side_branches_and_evaluates_without():
    lm.manual_seed(0)
    model = models.googlenet(input_shape=(64, 64, 3), num_classes=5)
    rng = np.random.default_rng(0)
    x = lm.tensor(rng.standard_normal((2, 64, 64, 3)).astype(np.float32))
    y = lm.tensor(np.array([1, 3]))
    out = model(x)
    assert isinstance(out, models.GoogLeNetOutputs)
    assert [tuple(o.shape) for o in out] == [(2, 5)] * 3
    loss_fn = models.AuxiliaryLoss()
    loss = loss_fn(out, y)
    plain = lm.functional.softmax_cross_entropy
    expected = float(plain(out.logits, y).numpy()) + 0.3 * (float(plain(out.aux_logits1, y).numpy())
                                                            + float(plain(out.aux_logits2, y).numpy()))
    assert float(loss.numpy()) == pytest.approx(expected, rel=1e-6)
    model.zero_grad()
    loss.backward()
    for name in ("conv1.conv.W", "inception5b.branch3.1.conv.W", "fc.W", "aux1.fc2.W", "aux2.conv.conv.W"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and np.any(grad.numpy() != 0), name
    model.eval()
    with lm.no_grad():
        logits = model(x)
    assert isinstance(logits, lm.Tensor) and tuple(logits.shape) == (2, 5)
    assert np.all(np.isfinite(logits.numpy()))
    assert float(loss_fn(logits, y).numpy()) == pytest.approx(float(plain(logits, y).numpy()))
    no_aux = models.googlenet(input_shape=(64, 64, 3), num_classes=5, aux_logits=False)
    assert isinstance(no_aux(x), lm.Tensor) and not hasattr(no_aux, "aux1")


def test_googlenet_paper_variant_forward_and_errors():
    lm.manual_seed(0)
    model = models.googlenet(input_shape=(80, 80, 3), num_classes=4, variant="paper")
    x = lm.tensor(np.random.default_rng(1).standard_normal((1, 80, 80, 3)).astype(np.float32))
    out = model(x)
    assert [tuple(o.shape) for o in out] == [(1, 4)] * 3
    assert model.aux1.fc1.n_in == 128              # 4a's 5×5 map pooled 5×5/3 -> 1×1×128
    with pytest.raises(lm.errors.ShapeError, match=r"side branch aux1 .* 4×4 for input_shape \(64, 64, 3\)"):
        models.googlenet(input_shape=(64, 64, 3), variant="paper")
    assert models.googlenet(input_shape=(64, 64, 3), variant="paper", aux_logits=False).output_shape(
        (None, 64, 64, 3)) == (None, 1000)
    with pytest.raises(lm.errors.LaminaError, match=r"variant must be 'torchvision' or 'paper', got 'v3'"):
        models.googlenet(variant="v3")
    with pytest.raises(lm.errors.LaminaError, match=r"aux_weight must be ≥ 0, got -1"):
        models.AuxiliaryLoss(aux_weight=-1)


def _torchvision_googlenet(num_classes):
    """torchvision/models/googlenet.py (v0.2x), written out: torchvision is not installable here."""
    nn = torch.nn

    class BasicConv2d(nn.Module):
        def __init__(self, c_in, c_out, **kw):
            super().__init__()
            self.conv = nn.Conv2d(c_in, c_out, bias=False, **kw)
            self.bn = nn.BatchNorm2d(c_out, eps=0.001)

        def forward(self, x):
            return torch.relu(self.bn(self.conv(x)))

    class Inception(nn.Module):
        def __init__(self, c_in, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj):
            super().__init__()
            self.branch1 = BasicConv2d(c_in, ch1x1, kernel_size=1)
            self.branch2 = nn.Sequential(BasicConv2d(c_in, ch3x3red, kernel_size=1),
                                         BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1))
            self.branch3 = nn.Sequential(BasicConv2d(c_in, ch5x5red, kernel_size=1),
                                         BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1))
            self.branch4 = nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
                                         BasicConv2d(c_in, pool_proj, kernel_size=1))

        def forward(self, x):
            return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)

    class InceptionAux(nn.Module):
        def __init__(self, c_in, num_classes):
            super().__init__()
            self.conv = BasicConv2d(c_in, 128, kernel_size=1)
            self.fc1 = nn.Linear(2048, 1024)
            self.fc2 = nn.Linear(1024, num_classes)
            self.dropout = nn.Dropout(p=0.7)

        def forward(self, x):
            x = self.conv(torch.nn.functional.adaptive_avg_pool2d(x, (4, 4)))
            return self.fc2(self.dropout(torch.relu(self.fc1(torch.flatten(x, 1)))))

    class GoogLeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
            self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            self.conv2 = BasicConv2d(64, 64, kernel_size=1)
            self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
            self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
            self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
            self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
            self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
            self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
            self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
            self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
            self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
            self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
            self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
            self.aux1 = InceptionAux(512, num_classes)
            self.aux2 = InceptionAux(528, num_classes)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.dropout = nn.Dropout(p=0.2)
            self.fc = nn.Linear(1024, num_classes)

        def forward(self, x):
            for name in ["conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b",
                         "maxpool3", "inception4a", "inception4b", "inception4c", "inception4d", "inception4e",
                         "maxpool4", "inception5a", "inception5b", "avgpool"]:
                x = getattr(self, name)(x)
            return self.fc(self.dropout(torch.flatten(x, 1)))

    return GoogLeNet().double()


def _to_torch(model, net):
    """Copy every Lamina parameter into the torch net: HWIO -> OIHW, (n_in, n_out) -> (n_out, n_in); the side
    branches' first FC also reorders its inputs from NHWC-flattened (h, w, c) to NCHW-flattened (c, h, w)."""
    suffix = {"W": "weight", "b": "bias", "gamma": "weight", "beta": "bias", "running_mean": "running_mean",
              "running_var": "running_var"}
    state = {}
    for name, p in model.named_parameters():
        head, last = name.rsplit(".", 1)
        a = p.numpy()
        if a.ndim == 4:
            a = a.transpose(3, 2, 0, 1)
        elif a.ndim == 2 and head.endswith(("aux1.fc1", "aux2.fc1")):
            a = a.reshape(4, 4, 128, 1024).transpose(3, 2, 0, 1).reshape(1024, 2048)
        elif a.ndim == 2:
            a = a.T
        state[f"{head}.{suffix[last]}"] = torch.from_numpy(a.copy())
    result = net.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    assert all(key.endswith("num_batches_tracked") for key in result.missing_keys), result.missing_keys


def test_googlenet_torchvision_variant_matches_torchvisions_network():
    """Every weight copied into torchvision's GoogLeNet: the same logits in eval mode (non-trivial BN running
    statistics), and the same side-branch outputs on a 4a-sized map."""
    rng = np.random.default_rng(7)
    with lm.set_default_dtype("float64"):
        lm.manual_seed(7)
        model = models.googlenet(input_shape=(64, 64, 3), num_classes=6)
        for name, p in model.named_parameters():
            if name.endswith(("running_mean", "beta")):
                p.data = p.backend.asarray(rng.normal(0, 0.1, p.shape), p.dtype)
            elif name.endswith(("running_var", "gamma")):
                p.data = p.backend.asarray(rng.uniform(0.5, 1.5, p.shape), p.dtype)
        net = _torchvision_googlenet(6)
        _to_torch(model, net)
        assert model.num_parameters(trainable_only=True) == sum(p.numel() for p in net.parameters())
        model.eval()
        net.eval()
        x = rng.standard_normal((2, 64, 64, 3))
        feature = rng.standard_normal((2, 6, 5, 512))
        with lm.no_grad():
            logits = model(lm.tensor(x)).numpy()
            aux1 = model.aux1(lm.tensor(feature)).numpy()
    with torch.no_grad():
        want = net(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
        want_aux1 = net.aux1(torch.from_numpy(feature.transpose(0, 3, 1, 2).copy())).numpy()
    np.testing.assert_allclose(logits, want, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(aux1, want_aux1, rtol=1e-9, atol=1e-9)


def test_alexnet_with_the_papers_local_response_normalization():
    plain, paper = models.alexnet(), models.alexnet(lrn=True)
    assert paper.num_parameters() == plain.num_parameters() == TORCHVISION_COUNTS["alexnet"]
    kinds = [type(layer).__name__ for layer in paper]
    assert kinds[:7] == ["Conv2D", "LocalResponseNorm", "MaxPool2D", "Conv2D", "LocalResponseNorm", "MaxPool2D",
                         "Conv2D"]
    lrn = paper[1]
    assert (lrn.size, lrn.alpha / lrn.size, lrn.beta, lrn.k) == (5, pytest.approx(1e-4), 0.75, 2.0)
    assert paper.output_shape((None, 224, 224, 3)) == (None, 1000)
    assert "LocalResponseNorm" in paper.summary((224, 224, 3), print_fn=None)
    small = models.alexnet(input_shape=(67, 67, 3), num_classes=3, lrn=True)
    x = lm.tensor(np.random.default_rng(0).standard_normal((1, 67, 67, 3)).astype(np.float32))
    small.eval()
    with lm.no_grad():
        assert tuple(small(x).shape) == (1, 3)


def test_googlenet_trains_with_fit_and_the_auxiliary_loss():
    from lamina.data import Split
    from lamina.training import fit

    rng = np.random.default_rng(0)
    X = rng.standard_normal((8, 32, 32, 3)).astype(np.float32)
    y = np.arange(8) % 2
    lm.manual_seed(0)
    model = models.googlenet(input_shape=(32, 32, 3), num_classes=2)
    history = fit(model, models.AuxiliaryLoss(), lm.optim.SGD(model.parameters(), lr=0.01), Split(X, y),
                  Split(X[:4], y[:4]), epochs=1, batch_size=4, progress=False)
    assert len(history.iteration_cost) == 2 and all(np.isfinite(history.iteration_cost))
    assert np.isfinite(history.dev_metrics[-1]["cost"])


def test_auxiliary_loss_is_registered_and_takes_a_loss_name():
    from lamina.registry import get

    assert get("losses", "auxiliary") is models.AuxiliaryLoss
    loss = models.AuxiliaryLoss(loss="mse", aux_weight=0.5)
    a, b = lm.tensor(np.array([[1.0, 2.0]])), lm.tensor(np.array([[0.0, 0.0]]))
    outputs = models.GoogLeNetOutputs(a, a * 2.0, a * 3.0)
    assert float(loss(outputs, b).numpy()) == pytest.approx(2.5 + 0.5 * (10.0 + 22.5))
    assert float(loss(a, b).numpy()) == pytest.approx(2.5)
    with pytest.raises(lm.errors.UnknownNameError, match="mse"):
        models.AuxiliaryLoss(loss="msee")
    assert "googlenet" in models.__all__ and "GoogLeNet" not in models.__all__    # recipes' builder names
