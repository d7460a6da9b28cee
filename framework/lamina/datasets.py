"""Built-in datasets: real data that scikit-learn ships (no download)."""
from __future__ import annotations

import numpy as np

from .data import Dataset, Split, split_indices
from .errors import ConfigError, LaminaError

RATIOS = "60/20/20"


def _sklearn():
    try:
        import sklearn.datasets
    except ImportError as err:
        raise LaminaError("the built-in datasets need scikit-learn: pip install scikit-learn") from err
    return sklearn.datasets


def _split(name, X, y, num_classes, seed, split) -> Dataset:
    """Shuffle and cut into train/dev/test by `split` ratios, e.g. "60/20/20" or "98/1/1" (§2.1);
    two ratios ("70/30") give train/dev and no test set, as does a zero third ratio."""
    parts = split_indices(len(X), split, seed)
    if len(parts) not in (2, 3):
        raise ConfigError(f"dataset {name!r}: split {split!r} must have two (train/dev) or three "
                          f"(train/dev/test) ratios, got {len(parts)}")
    train, dev, test = (list(parts) + [None])[:3]
    if len(train) == 0 or len(dev) == 0:
        raise ConfigError(f"dataset {name!r}: split {split!r} leaves the train or dev set empty")

    def subset(idx):
        return Split(X[idx], y[idx]) if idx is not None and len(idx) else None

    return Dataset(name, subset(train), subset(dev), subset(test), num_classes)


DIGITS_SIZE = 8


def digits(seed: int = 0, split: str = RATIOS, images: bool = False, size: int = DIGITS_SIZE) -> Dataset:
    """1,797 8×8 handwritten digits (UCI), the 64 pixel intensities 0..16 scaled to 0..1 (pixels/16);
    10 classes; train/dev/test by `split` (60/20/20). With `images`, each example is an 8×8×1
    NHWC image instead of 64 features (for convolutional networks). (Standardizing each pixel instead does worse here: pixels that are
    almost always blank get tiny deviations and blow up at test time.)

    `size` (a multiple of 8) enlarges each image to size × size by exact nearest-neighbour
    upsampling, x[i, j] = x8[⌊i·8/size⌋, ⌊j·8/size⌋]: every pixel becomes a (size/8) × (size/8)
    block of the same value, no interpolation (size=32 gives LeNet-5's 32×32 input)."""
    size = int(size)
    if size <= 0 or size % DIGITS_SIZE:
        raise ConfigError(f"dataset 'digits': size must be a positive multiple of {DIGITS_SIZE} (the images are "
                          f"upsampled by whole pixels), got {size}")
    data = _sklearn().load_digits()
    X = data.data.astype(np.float64).reshape(-1, DIGITS_SIZE, DIGITS_SIZE) / 16.0
    scale = size // DIGITS_SIZE
    X = X.repeat(scale, axis=1).repeat(scale, axis=2)
    X = X[..., None] if images else X.reshape(len(X), -1)
    return _split("digits", X, data.target.astype(np.int64), 10, seed, split)


def breast_cancer(seed: int = 0, split: str = RATIOS) -> Dataset:
    """569 Wisconsin breast-cancer cases, 30 raw features (their scales differ by 10⁴: recipes
    normalize them); binary labels (1 = benign) as (m, 1); train/dev/test by `split` (60/20/20)."""
    data = _sklearn().load_breast_cancer()
    return _split("breast_cancer", data.data.astype(np.float64), data.target.astype(np.float64)[:, None], 2, seed,
                  split)


FIRST_NAME_LOCALES = ("en_US",)


def first_names(locales=FIRST_NAME_LOCALES, lowercase: bool = True, min_count: int = 1, split: str = "80/10/10",
                seed: int = 0):
    """The first names that faker ships for `locales` (each locale's `first_names`, duplicates removed), one
    per example, as a character-level language-model dataset (§5.4): ids of the characters then `<EOS>`,
    lowercased if `lowercase`; the vocabulary comes from the training names."""
    import importlib

    from .language_model import text_dataset

    names = {}
    for locale in locales:
        try:
            provider = importlib.import_module(f"faker.providers.person.{locale}").Provider
        except ModuleNotFoundError as err:
            raise LaminaError(f"dataset 'first_names': no faker person provider for locale {locale!r} ({err}); "
                              f"pip install faker, and use locales such as 'en_US', 'en_GB', 'en_IE'") from err
        names.update(dict.fromkeys(provider.first_names))
    return text_dataset("first_names", sorted(names), level="char", min_count=min_count, lowercase=lowercase,
                        split=split, seed=seed)


def lee_corpus(min_count: int = 2, max_length: int | None = 40, split: str = "80/10/10", seed: int = 0):
    """The Lee background corpus that gensim ships with its test data (lee_background.cor: 300 Australian
    news stories, about 60,000 words), cut into sentences, as a word-level language-model dataset (§5.4):
    lowercased words and punctuation then `<EOS>`; words seen fewer than `min_count` times in the training
    sentences become `<UNK>`; a sentence longer than `max_length` tokens is cut there."""
    try:
        from gensim.test.utils import datapath
    except ImportError as err:
        raise LaminaError("dataset 'lee_corpus' reads the corpus bundled with gensim: pip install gensim") from err
    from .language_model import text_dataset
    from .text import split_sentences

    with open(datapath("lee_background.cor"), encoding="utf-8", errors="replace") as f:
        sentences = [s for line in f for s in split_sentences(line)]
    return text_dataset("lee_corpus", sentences, level="word", min_count=min_count, max_length=max_length,
                        split=split, seed=seed)


def marker_memory(m: int = 3000, T: int = 30, k: int = 3, seed: int = 0, split: str = RATIOS) -> Dataset:
    """A many-to-one task that needs a memory of T steps (§5.5–5.6): x (m, T, 2), where channel 0 is a random
    value ±1 at every step and channel 1 is 0 except for a single marker x<t*>[1] = 1 at a random step t* < k;
    the label is the marked value, y = [x<t*>[0] = +1] in {0, 1}, int (m,). The network has to pick the marked
    value out (a multiplicative, gate-like choice) and carry it across the T − k steps of ±1 noise that follow
    on the same channel: chance is 50%."""
    m, T, k = int(m), int(T), int(k)
    if m < 2 or not 1 <= k <= T:
        raise ConfigError(f"dataset 'marker_memory': needs m ≥ 2 sequences and 1 ≤ k ≤ T (the marker falls in the "
                          f"first k of T steps), got m={m}, T={T}, k={k}")
    rng = np.random.default_rng(seed)
    X = np.zeros((m, T, 2))
    X[:, :, 0] = 2.0 * rng.integers(0, 2, (m, T)) - 1.0
    rows, marked = np.arange(m), rng.integers(0, k, m)
    X[rows, marked, 1] = 1.0
    y = (X[rows, marked, 0] > 0).astype(np.int64)
    return _split("marker_memory", X, y, 2, seed, split)


def delay_echo(m: int = 2000, T: int = 40, delay: int = 10, seed: int = 0, split: str = RATIOS) -> Dataset:
    """A many-to-many task (§5.1, T_x = T_y): x (m, T, 1) random bits; the label of every step is the input
    `delay` steps before, y<t> = x<t − delay>, so y (m, T) holds one binary label per step. The first `delay`
    steps have nothing to echo yet and are marked unknown (−1): `multi_task_bce` leaves them out of the loss
    and `multi_label_accuracy` out of the score. A network that sees one step at a time scores 50%."""
    m, T, delay = int(m), int(T), int(delay)
    if m < 2 or not 0 <= delay < T:
        raise ConfigError(f"dataset 'delay_echo': needs m ≥ 2 sequences and 0 ≤ delay < T (something left to echo), "
                          f"got m={m}, T={T}, delay={delay}")
    bits = np.random.default_rng(seed).integers(0, 2, (m, T)).astype(np.float64)
    y = np.full((m, T), -1.0)
    y[:, delay:] = bits[:, :T - delay]
    return _split("delay_echo", bits[:, :, None], y, 2, seed, split)


DATASETS = {"digits": digits, "breast_cancer": breast_cancer, "first_names": first_names, "lee_corpus": lee_corpus,
            "marker_memory": marker_memory, "delay_echo": delay_echo}
