"""The background data loader (§4.12): the same batches and augmentations for any number of
workers, in order, with `minibatches`' shuffling; worker errors raised in the caller with the
batch; clean shutdown when a loop stops early; training with augmentation from Python and
from a recipe, exact resumption included."""
import threading
import time

import numpy as np
import pytest

import lamina as lm
from lamina import augment as A
from lamina.data import BatchError, DataLoader, Split, batch_generator, epoch_seed, minibatches
from lamina.recipes import Recipe
from lamina.run import train_recipe
from lamina.training import fit


def _images(m=37, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((m, 6, 6, 2)), np.arange(m)


AUGMENT = A.Compose([A.RandomMirror(), A.RandomCrop(6, padding=1), A.RandomRotation(15), A.ColorShift(0.1)])


def _collect(loader, epoch):
    return [(X.copy(), y.copy()) for X, y in loader.batches(epoch)]


@pytest.mark.parametrize("workers", [1, 2, 4])
@pytest.mark.parametrize("prefetch", [1, 3])
def test_batches_do_not_depend_on_the_number_of_workers(workers, prefetch):
    X, y = _images()
    reference = _collect(DataLoader(X, y, 8, augment=AUGMENT, workers=0, seed=3), epoch=2)
    got = _collect(DataLoader(X, y, 8, augment=AUGMENT, workers=workers, prefetch=prefetch, seed=3), epoch=2)
    assert len(got) == len(reference) == 5
    for (Xa, ya), (Xb, yb) in zip(got, reference):
        np.testing.assert_array_equal(Xa, Xb)
        np.testing.assert_array_equal(ya, yb)


def test_batches_follow_minibatches_order_and_each_is_augmented_from_its_own_generator():
    X, y = _images()
    loader = DataLoader(X, y, 8, augment=AUGMENT, workers=2, seed=5)
    plain = list(minibatches(X, y, 8, shuffle=True, seed=epoch_seed(5, 1)))
    got = _collect(loader, 1)
    for b, ((X_batch, y_batch), (X_plain, y_plain)) in enumerate(zip(got, plain)):
        np.testing.assert_array_equal(y_batch, y_plain)
        np.testing.assert_array_equal(X_batch, AUGMENT(X_plain, batch_generator(5, 1, b)))
    assert sorted(np.concatenate([b[1] for b in got])) == list(range(37))    # every example once
    unshuffled = DataLoader(X, y, 10, shuffle=False, workers=2)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in unshuffled.batches(0)]), y)
    np.testing.assert_array_equal(next(iter(unshuffled))[0], X[:10])       # no augment: the rows as they are


def test_epochs_differ_and_iteration_moves_to_the_next_epoch():
    X, y = _images()
    loader = DataLoader(X, y, 8, augment=AUGMENT, workers=2, seed=0)
    first, second = [b for _, b in loader], [b for _, b in loader]
    assert loader.epoch == 2
    assert not all(np.array_equal(a, b) for a, b in zip(first, second))
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate([b for _, b in loader.batches(0)]))
    assert len(loader) == 5


def test_a_worker_error_is_raised_in_the_caller_with_the_batch():
    X, y = _images()
    def fail_third(X_batch, rng):
        if np.array_equal(X_batch, X[16:24]):
            raise ValueError("bad pixel")
        return X_batch

    for workers in (0, 2):
        loader = DataLoader(X, y, 8, shuffle=False, augment=fail_third, workers=workers)
        got = []
        with pytest.raises(BatchError, match=r"DataLoader: preparing batch 2 of epoch 0 failed: ValueError: "
                                             r"bad pixel") as info:
            for X_batch, _ in loader:
                got.append(X_batch)
        assert len(got) == 2 and info.value.batch == 2 and info.value.epoch == 0
        assert isinstance(info.value.__cause__, ValueError)
        assert isinstance(info.value, lm.LaminaError)


def _loader_threads():
    return [t for t in threading.enumerate() if t.name.startswith("lamina-loader")]


def test_stopping_early_cancels_pending_batches_and_stops_the_threads():
    X, y = np.zeros((400, 2, 2, 1)), np.arange(400)
    started = []
    lock = threading.Lock()

    def slow(X_batch, rng):
        with lock:
            started.append(1)
        time.sleep(0.01)
        return X_batch

    loader = DataLoader(X, y, 4, augment=slow, workers=2, prefetch=3)
    for b, _ in enumerate(loader):
        assert len(_loader_threads()) <= 2
        if b == 4:
            break
    assert _loader_threads() == []                   # the generator closed: threads joined
    assert len(started) <= 5 + 3                     # nothing beyond the prefetch window was prepared
    batches = loader.batches(0)
    next(batches)
    batches.close()
    assert _loader_threads() == []


def test_argument_errors():
    X, y = _images()
    with pytest.raises(ValueError, match="DataLoader: batch_size must be an integer >= 1, got 0"):
        DataLoader(X, y, 0)
    with pytest.raises(ValueError, match="DataLoader: workers must be an integer >= 0, got -1"):
        DataLoader(X, y, 4, workers=-1)
    with pytest.raises(ValueError, match="DataLoader: prefetch must be an integer >= 1, got 0"):
        DataLoader(X, y, 4, prefetch=0)
    with pytest.raises(lm.ShapeError, match="DataLoader: X has 37 examples but y has 3"):
        DataLoader(X, y[:3], 4)
    with pytest.raises(ValueError, match="DataLoader: augment must be callable"):
        DataLoader(X, y, 4, augment="random_mirror")


def test_an_unfitted_pca_colour_is_fitted_on_the_loader_data():
    X = np.random.default_rng(0).standard_normal((20, 3, 3, 3))
    pca = A.PCAColor(0.1)
    DataLoader(X, np.arange(20), 4, augment=A.Compose([pca]))
    np.testing.assert_allclose(pca.eigenvalues, A.PCAColor().fit(X).eigenvalues)


# ---- training with augmentation --------------------------------------------------------------------------
def _net(seed=0):
    lm.manual_seed(seed)
    return lm.nn.Sequential(lm.nn.Flatten(), lm.nn.Dense(72, 3))


def _train_split():
    X, _ = _images(48, seed=1)
    return Split(X, (X[:, :3, :, 0].sum(axis=(1, 2)) > 0).astype(np.int64) + (X[:, 3:, :, 1].mean((1, 2)) > 0))


def _fit(split, epochs, checkpoint_dir=None, resume=False, workers=2, augment=None):
    model = _net()
    optimizer = lm.optim.Adam(model.parameters(), lr=0.01)
    history = fit(model, lm.losses.SoftmaxCrossEntropy(), optimizer, split, epochs=epochs, batch_size=16, seed=4,
                  progress=False, checkpoint_dir=checkpoint_dir, resume=resume, workers=workers, augment=augment)
    return model, history


def test_fit_with_augmentation_is_the_same_for_any_number_of_workers_and_differs_without():
    split = _train_split()
    augmented = Split(split.X, split.y, augment=AUGMENT)
    _, h0 = _fit(augmented, 2, workers=0)
    _, h2 = _fit(augmented, 2, workers=3)
    _, h_arg = _fit(split, 2, augment=AUGMENT)
    _, plain = _fit(split, 2)
    assert h0.iteration_cost == h2.iteration_cost == h_arg.iteration_cost
    assert h0.iteration_cost != plain.iteration_cost
    assert len(h0.iteration_cost) == 2 * 3


def test_fit_with_augmentation_resumes_exactly(tmp_path):
    split = _train_split()
    split.augment = AUGMENT
    whole, history = _fit(split, 3)
    _fit(split, 1, checkpoint_dir=tmp_path)
    resumed, resumed_history = _fit(split, 3, checkpoint_dir=tmp_path, resume=True)
    assert resumed_history.iteration_cost == history.iteration_cost
    for (name, a), (_, b) in zip(whole.named_parameters(), resumed.named_parameters()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)


def test_a_loader_error_during_fit_names_the_batch_and_leaves_no_threads():
    split = _train_split()

    def broken(X_batch, rng):
        raise RuntimeError("disk gone")

    with pytest.raises(BatchError, match="preparing batch 0 of epoch 0 failed: RuntimeError: disk gone"):
        _fit(Split(split.X, split.y, augment=broken), 1)
    assert _loader_threads() == []


@pytest.mark.parametrize("workers", [0, 2])
def test_training_that_stops_inside_an_epoch_stops_the_loader_threads(workers):
    split = _train_split()
    poisoned = split.X.copy()
    poisoned[split.y == 0] = np.nan                 # the first epoch meets a NaN image in some batch
    with pytest.raises(lm.TrainingDiverged, match="epoch 1, batch"):
        _fit(Split(poisoned, split.y, augment=A.RandomMirror()), 2, workers=workers)
    assert _loader_threads() == []


RECIPE = {
    "name": "tiny-augmented",
    "data": {"dataset": "digits", "images": True,
             "augment": [{"type": "random_crop", "size": 8, "padding": 1}, {"type": "random_rotation", "degrees": 10},
                         {"type": "pca_color", "std": 0.1}]},
    "model": {"layers": [{"type": "conv2d", "n_C": 4, "f": 3, "padding": "same", "activation": "relu"},
                         {"type": "max_pool2d", "f": 2}, {"type": "flatten"}, {"type": "dense", "n_out": 10}]},
    "loss": {"name": "softmax_cross_entropy"},
    "optimizer": {"name": "adam", "lr": 0.01},
    "training": {"epochs": 2, "batch_size": 128},
}


def test_a_recipe_with_augmentation_trains_and_resumes(tmp_path):
    recipe = Recipe.from_dict(RECIPE)
    data = recipe.load_data()
    assert [t.name for t in data.train.augment.transforms] == ["random_crop", "random_rotation", "pca_color"]
    assert data.dev.augment is None
    results = train_recipe(recipe, tmp_path / "run", progress=False, echo=lambda *_: None, plots=False)
    assert results["epochs"] == 2 and results["dev_accuracy"] > 0.3
    plain = train_recipe(Recipe.from_dict({**RECIPE, "data": {"dataset": "digits", "images": True}}),
                         tmp_path / "plain", progress=False, echo=lambda *_: None, plots=False)
    assert plain["epoch_cost"] != results["epoch_cost"]
    train_recipe(recipe.with_overrides(epochs=1), tmp_path / "resumed", progress=False, echo=lambda *_: None,
                 plots=False)
    resumed = train_recipe(recipe, tmp_path / "resumed", resume=True, progress=False, echo=lambda *_: None,
                           plots=False)
    assert resumed["epoch_cost"] == results["epoch_cost"]


def test_a_recipe_with_a_bad_augmentation_is_a_config_error():
    bad = dict(RECIPE, data={"dataset": "digits", "images": True, "augment": [{"type": "random_mirror", "p": 2}]})
    with pytest.raises(lm.ConfigError, match=r"recipe 'tiny-augmented' \[data\] augment: entry 0: cannot build "
                                             r"augmentation 'random_mirror' .*p must be a number in \[0, 1\], got 2"):
        Recipe.from_dict(bad).load_data()
