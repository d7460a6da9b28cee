"""Splits (§3.4, §3.8): train/dev/test by ratio, the training-dev set for mismatched
distributions, and the unknown-label mask of multi-task targets."""
import numpy as np
import pytest

from lamina.data import (Dataset, Split, known_labels, mismatched, parse_ratios, split_indices, split_sizes,
                         training_dev_split, with_train_dev)


@pytest.mark.parametrize("given, want", [("98/1/1", (0.98, 0.01, 0.01)), ("70/30", (0.7, 0.3)),
                                         ((60, 20, 20), (0.6, 0.2, 0.2)), ((0.6, 0.2, 0.2), (0.6, 0.2, 0.2)),
                                         ("0.7/0.3", (0.7, 0.3)), ((1, 0), (1.0, 0.0))])
def test_ratios_are_fractions_percents_or_slashes(given, want):
    assert parse_ratios(given) == pytest.approx(want)


@pytest.mark.parametrize("bad, message", [("60/20/10", "sum to 1 .* or 100"), ((0.5, 0.6), "sum to 1"),
                                          ((1.2, -0.2), "non-negative"), ("a/b", "numbers separated by '/'"),
                                          ((), "non-negative")])
def test_bad_ratios_are_refused_not_rescaled(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_ratios(bad)


def test_split_sizes_follow_the_ratios():
    assert split_sizes(1_000_000, "98/1/1") == [980_000, 10_000, 10_000]
    assert split_sizes(100, "70/30") == [70, 30]
    assert split_sizes(1797, (0.6, 0.2, 0.2)) == [1078, 360, 359]     # the digits dataset, unchanged
    assert split_sizes(569, (0.6, 0.2, 0.2)) == [341, 114, 114]
    assert split_sizes(50, (1, 0)) == [50, 0]                           # a zero ratio may stay empty


def test_98_1_1_on_small_m_keeps_every_part_non_empty():
    assert split_sizes(10, "98/1/1") == [8, 1, 1]
    assert split_sizes(3, "98/1/1") == [1, 1, 1]
    with pytest.raises(ValueError, match="cannot split 2 examples into 3 non-empty parts"):
        split_sizes(2, "98/1/1")


@pytest.mark.parametrize("ratios", ["98/1/1", "70/30", "60/20/20", (0.5, 0.25, 0.25), (0.9, 0.05, 0.05)])
def test_sizes_always_sum_to_m_with_no_empty_part(ratios):
    fractions = parse_ratios(ratios)
    for m in range(len(fractions), 300):
        sizes = split_sizes(m, ratios)
        assert sum(sizes) == m and min(sizes) >= 1, (m, sizes)
        assert max(abs(n - r * m) for n, r in zip(sizes, fractions)) < len(fractions) + 1, (m, sizes)


def test_split_indices_partition_the_examples_reproducibly():
    parts = split_indices(1000, "98/1/1", seed=3)
    assert [len(p) for p in parts] == [980, 10, 10]
    assert sorted(np.concatenate(parts).tolist()) == list(range(1000))
    again = split_indices(1000, "98/1/1", seed=3)
    other = split_indices(1000, "98/1/1", seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    assert not np.array_equal(parts[1], other[1])


def _source(m=1000, seed=0):
    """Distribution A: feature 0 marks the distribution (0), feature 1 is the example's id; 20% positives."""
    rng = np.random.default_rng(seed)
    X = np.column_stack([np.zeros(m), np.arange(m), rng.standard_normal(m)])
    return Split(X, (rng.uniform(size=m) < 0.2).astype(np.int64))


def _target(m=100):
    """Distribution B: feature 0 is 1, ids from 10_000."""
    X = np.column_stack([np.ones(m), 10_000 + np.arange(m), np.zeros(m)])
    return Split(X, np.arange(m) % 2)


def test_training_dev_is_carved_out_of_train_and_not_trained_on():
    source = _source()
    train, train_dev = training_dev_split(source, 0.1, seed=1)
    assert len(train) == 900 and len(train_dev) == 100
    ids, held = set(train.X[:, 1]), set(train_dev.X[:, 1])
    assert not ids & held and ids | held == set(range(1000))
    for split in (train, train_dev):                       # rows keep their labels
        np.testing.assert_array_equal(split.y, source.y[split.X[:, 1].astype(int)])
    # the same distribution as train: a random draw from all of it, not a tail of the rows
    assert min(held) < 100 and max(held) > 900
    big_train, big_held = training_dev_split(_source(20_000), 0.25, seed=1)
    assert abs(big_held.y.mean() - big_train.y.mean()) < 0.02
    by_count, _ = training_dev_split(source, 250, seed=1)
    assert len(by_count) == 750
    again_train, again_dev = training_dev_split(source, 0.1, seed=1)
    np.testing.assert_array_equal(again_dev.X, train_dev.X)


@pytest.mark.parametrize("size", [0, 1.0, 1000, 5000, -3, True, 0.0])
def test_training_dev_size_must_leave_examples_on_both_sides(size):
    with pytest.raises(ValueError, match="training_dev_split"):
        training_dev_split(_source(), size)


def test_with_train_dev_defaults_to_the_dev_set_size():
    source, target = _source(), _target(60)
    dataset = Dataset("d", source, Split(target.X[:40], target.y[:40]), Split(target.X[40:], target.y[40:]), 2)
    carved = with_train_dev(dataset, seed=0)
    assert len(carved.train_dev) == 40 and len(carved.train) == 960
    assert carved.dev is dataset.dev and carved.test is dataset.test and dataset.train_dev is None
    with pytest.raises(ValueError, match="already has a training-dev set"):
        with_train_dev(carved)


def test_mismatched_distributions_train_on_a_and_aim_at_b():
    source, target = _source(), _target(100)
    ds = mismatched("cats", source, target, train_dev=0.05, seed=0, num_classes=2)
    assert (ds.train.X[:, 0] == 0).all() and (ds.train_dev.X[:, 0] == 0).all()       # A only
    assert (ds.dev.X[:, 0] == 1).all() and (ds.test.X[:, 0] == 1).all()              # B only
    assert len(ds.train) == 950 and len(ds.train_dev) == 50 and len(ds.dev) == 50 and len(ds.test) == 50
    assert not set(ds.dev.X[:, 1]) & set(ds.test.X[:, 1])
    assert set(ds.dev.X[:, 1]) | set(ds.test.X[:, 1]) == set(10_000 + np.arange(100))
    assert not set(ds.train.X[:, 1]) & set(ds.train_dev.X[:, 1])
    default = mismatched("cats", source, target, dev_test="80/20")
    assert len(default.dev) == 80 and len(default.train_dev) == 80 and len(default.test) == 20


def test_known_labels_mask_nan_and_minus_one():
    y = np.array([[1.0, np.nan, 0.0], [-1.0, 1.0, 0.5]])
    np.testing.assert_array_equal(known_labels(y), [[True, False, True], [False, True, True]])
    np.testing.assert_array_equal(known_labels(np.array([[0, -1, 1]])), [[True, False, True]])
