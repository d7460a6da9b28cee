"""Language models (§5.4): token ids (m, T) → logits (m, T, V) with an Embedding, a recurrent stack and a
time-distributed Dense; their loss, perplexity, sentence probabilities and sampling of novel sequences.

Convention for x<1>: the seed feeds x<1> = 0; Lamina feeds the `<EOS>` token instead (the end of the
"previous sentence", as GPT-2 does with its end-of-text token), so x<t> = y<t−1> for t ≥ 2 and
x<1> = `<EOS>`: `shift_right(y)`. A learned start vector plays the part of the seed's zero vector.

    P(y<1>, …, y<T_y>) = Π_t P(y<t> | y<1>, …, y<t−1>)   (computed as Σ_t log P, `sentence_log_probability`)
    perplexity = exp(−(1/N) Σ log P(y<t> | …)) over the N tokens (each sentence's `<EOS>` included)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from . import functional as F
from .autograd import no_grad
from .data import Dataset, Split, split_indices
from .errors import ConfigError, LaminaError, ShapeError
from .losses import Loss
from .nn import GRU, LSTM, Dense, Embedding, SimpleRNN, TimeDistributed, stacked
from .nn.layer import Layer
from .nn.recurrent import _Recurrent
from .tensor import Tensor, tensor
from .text import EOS_ID, PAD_ID, UNK_ID, Vocabulary

VOCABULARY_FILE = "vocabulary.json"
CELLS = {"lstm": LSTM, "gru": GRU, "rnn": SimpleRNN}


def shift_right(targets: np.ndarray) -> np.ndarray:
    """The inputs of a language model from its targets y (m, T): x<1> = `<EOS>`, x<t> = y<t−1>."""
    targets = np.asarray(targets)
    inputs = np.empty_like(targets)
    inputs[:, 0] = EOS_ID
    inputs[:, 1:] = targets[:, :-1]
    return inputs


class LanguageModel(Layer):
    """ŷ<t> = softmax(a<t>·W_ya + b_y), a<t> = RNN(e<t>, a<t−1>), e<t> = E[x<t>]: Embedding(V, d) →
    `num_layers` of `cell` ("lstm", "gru" or "rnn") with n_a units each (return_sequences, inverted dropout
    keep_prob between layers) → TimeDistributed(Dense(n_a, V)). Outputs logits (m, T, V); the softmax is
    in the loss."""

    def __init__(self, V: int, d: int = 32, n_a: int = 64, cell: str = "lstm", num_layers: int = 1,
                 keep_prob: float = 1.0, name: str | None = None):
        super().__init__(name)
        if cell not in CELLS:
            raise ConfigError(f"LanguageModel layer {self.name!r}: 'cell' must be one of "
                              f"{', '.join(map(repr, CELLS))}, got {cell!r}")
        self.V, self.d, self.n_a, self.cell = int(V), int(d), int(n_a), cell
        self.embedding = Embedding(self.V, self.d)
        self.rnn = stacked(CELLS[cell], self.d, self.n_a, int(num_layers), keep_prob=keep_prob,
                           return_sequences=True)
        self.head = TimeDistributed(Dense(self.n_a, self.V))

    def forward(self, ids):
        if ids.ndim != 2:
            raise ShapeError(f"LanguageModel layer {self.name!r}: expected token ids of shape (m, T), got {ids.shape}")
        return self.head(self.rnn(self.embedding(ids)))

    def step(self, ids, states=None):
        """One step of generation: the logits (m, V) of the token after `ids` (m,), and every recurrent layer's
        states after it, to pass back for the next step (None before the first). The dropout layers between
        the recurrent ones act as in the model's mode (none in eval mode)."""
        x = self.embedding(ids.reshape(ids.shape[0], 1))
        new_states = []
        for layer in self.rnn.layers():
            if isinstance(layer, _Recurrent):
                x, layer_states = layer.run(x, None if states is None else states[len(new_states)])
                new_states.append(layer_states)
            else:
                x = layer(x)
        return self.head(x)[:, 0], new_states

    def output_shape(self, input_shape):
        return tuple(input_shape) + (self.V,)

    def describe(self) -> str:
        return f"V={self.V}, d={self.d}, {self.cell} n_a={self.n_a}"


# ---- loss and metrics ------------------------------------------------------------------------
def _labels(targets) -> np.ndarray:
    return targets.numpy() if isinstance(targets, Tensor) else np.asarray(targets)


class SequenceSoftmaxCrossEntropy(Loss):
    """J = −(1/m) Σ_i Σ_t [y_i<t> ≠ <PAD>] log softmax(z_i<t>)[y_i<t>]: the seed's loss summed over time,
    averaged over the m sequences, padded steps left out. Logits (m, T, V), integer targets (m, T)."""

    name, expects = "sequence_softmax_cross_entropy", "logits"

    def __call__(self, logits, targets):
        y = _labels(targets)
        if logits.ndim != 3 or y.shape != tuple(logits.shape[:2]) or y.dtype.kind not in "iu":
            raise ShapeError(f"sequence_softmax_cross_entropy: expected logits (m, T, V) and integer targets (m, T), "
                             f"got logits {logits.shape} and targets {y.shape} of dtype {y.dtype}")
        m, T, V = logits.shape
        real = np.flatnonzero(y.reshape(-1) != PAD_ID)
        flat = logits.reshape(m * T, V)
        if real.size == 0:
            return flat.sum() * 0.0
        tokens = flat[real]
        labels = Tensor(y.reshape(-1)[real], backend=logits.backend)
        return F.softmax_cross_entropy(tokens, labels) * (real.size / m)


def token_log_probabilities(logits: np.ndarray, targets: np.ndarray, rows: int = 64) -> np.ndarray:
    """log P(y<t> | y<1…t−1>) = z<t>[y<t>] − log Σ_k exp z<t>_k for each (i, t), in float64 (`rows` sequences
    at a time, so a large (m, T, V) never gets a float64 copy); 0 on padded steps."""
    logits, y = np.asarray(logits), np.asarray(targets)
    out = np.zeros(y.shape, dtype=np.float64)
    for start in range(0, len(y), rows):
        z = logits[start:start + rows].astype(np.float64)
        labels = y[start:start + rows]
        z_max = z.max(axis=-1)
        log_norm = z_max + np.log(np.exp(z - z_max[..., None]).sum(axis=-1))
        picked = np.take_along_axis(z, np.where(labels == PAD_ID, 0, labels)[..., None], axis=-1)[..., 0]
        out[start:start + rows] = np.where(labels == PAD_ID, 0.0, picked - log_norm)
    return out


class Perplexity:
    """exp(−(1/N) Σ log P(y<t> | y<1…t−1>)) over the N non-padding target tokens (lower is better; a model
    that spreads its probability evenly over V tokens scores V)."""

    name = "perplexity"
    higher_is_better = False

    def __call__(self, outputs, targets) -> float:
        y = _labels(targets)
        count = int((y != PAD_ID).sum())
        if count == 0:
            raise LaminaError("perplexity: the targets have no tokens (all <PAD>)")
        return float(math.exp(-token_log_probabilities(_labels(outputs), y).sum() / count))


LOSSES = [SequenceSoftmaxCrossEntropy]
METRICS = [Perplexity]


# ---- data ---------------------------------------------------------------------------------------
@dataclass
class TextDataset(Dataset):
    """Sentences as next-token prediction: X = shift_right(y) (m, T) and y = ids padded with `<PAD>` (m, T);
    `vocabulary` (built from the training sentences only) maps them back to text; num_classes = V."""

    vocabulary: Vocabulary | None = None


def pad(sequences: Sequence[Sequence[int]], T: int | None = None) -> np.ndarray:
    """Id sequences as an (m, T) int64 array padded with `<PAD>` (T: the longest; longer ones are cut)."""
    T = max((len(s) for s in sequences), default=0) if T is None else int(T)
    out = np.full((len(sequences), T), PAD_ID, dtype=np.int64)
    for i, s in enumerate(sequences):
        s = list(s)[:T]
        out[i, :len(s)] = s
    return out


def text_dataset(name: str, sentences: Sequence[str], level: str = "word", min_count: int = 1,
                 lowercase: bool | None = None, max_length: int | None = None, split: str = "80/10/10",
                 seed: int = 0) -> TextDataset:
    """Shuffle `sentences` into train/dev/test by `split`, build the vocabulary from the training ones
    (`min_count`: rarer tokens become `<UNK>`, also in dev/test), encode each with its `<EOS>` and pad.
    `max_length` caps a sentence's tokens (its `<EOS>` included; a longer one is cut there)."""
    sentences = [s for s in sentences if s.strip()]
    parts = split_indices(len(sentences), split, seed)
    if len(parts) not in (2, 3) or len(parts[0]) == 0 or len(parts[1]) == 0:
        raise ConfigError(f"dataset {name!r}: split {split!r} must give non-empty train and dev sets "
                          f"(two or three ratios) of the {len(sentences)} sentences")
    train_sentences = [sentences[i] for i in parts[0]]
    vocabulary = Vocabulary.build(train_sentences, level=level, min_count=min_count, lowercase=lowercase)
    encoded = [vocabulary.encode(s) for s in sentences]
    T = max(len(e) for e in encoded)
    T = T if max_length is None else min(T, int(max_length))

    def subset(idx):
        if idx is None or len(idx) == 0:
            return None
        y = pad([encoded[i] for i in idx], T)
        return Split(shift_right(y), y)

    train, dev, test = (list(parts) + [None])[:3]
    return TextDataset(name, subset(train), subset(dev), subset(test), len(vocabulary), vocabulary=vocabulary)


def unigram_perplexity(train_targets: np.ndarray, targets: np.ndarray, V: int) -> float:
    """The perplexity of the unigram baseline P(w) = (count_train(w) + 1) / (N_train + V − 1) (add-one,
    `<PAD>` never predicted) on `targets`: the bar a model using context has to clear."""
    train_targets, targets = np.asarray(train_targets), np.asarray(targets)
    counts = np.bincount(train_targets[train_targets != PAD_ID].ravel(), minlength=V).astype(np.float64) + 1.0
    counts[PAD_ID] = 0.0
    real = targets[targets != PAD_ID]
    return float(math.exp(-np.log(counts[real] / counts.sum()).mean()))


def unigram_results(data: TextDataset) -> dict:
    """{"<split>_unigram_perplexity": ...} for each evaluated split of a text dataset."""
    out = {}
    for split_name in ("train", "dev", "test"):
        split = getattr(data, split_name, None)
        if split is not None:
            out[f"{split_name}_unigram_perplexity"] = unigram_perplexity(data.train.y, split.y, data.num_classes)
    return out


# ---- using a trained model ------------------------------------------------------------------------
def _logits(model, inputs: np.ndarray) -> np.ndarray:
    from .training import predict

    return predict(model, np.asarray(inputs, dtype=np.int64))


def _next_token_logits(model, token: np.ndarray):
    """The logits (m, V) of each next token, given `token` (m,) and then, at each step, the values the caller
    has written into it: a LanguageModel steps its recurrent states on (linear in the length); any other model
    reruns the whole prefix."""
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            if isinstance(model, LanguageModel):
                states = None
                while True:
                    logits, states = model.step(tensor(token), states)
                    yield logits.numpy()
            prefix = token[:, None].copy()
            while True:
                yield _logits(model, prefix)[:, -1]
                prefix = np.concatenate([prefix, token[:, None]], axis=1)
    finally:
        model.train(was_training)


def _check_vocabulary(model, vocabulary: Vocabulary, where: str) -> None:
    """The model must map ids (m, T) to logits (m, T, V) over this vocabulary's V tokens."""
    shape = _logits(model, [[EOS_ID]]).shape
    if len(shape) != 3 or shape[-1] != len(vocabulary):
        raise LaminaError(f"{where}: expected a language model mapping token ids (m, T) to logits (m, T, V) with "
                          f"V = {len(vocabulary)} (the vocabulary's size), but ids (1, 1) gave outputs {shape}")


def sentence_log_probability(model, vocabulary: Vocabulary, sentence: str | Sequence[str]) -> float:
    """log P(sentence) = Σ_t log P(y<t> | y<1>, …, y<t−1>) over its tokens and the closing `<EOS>`
    (a token outside the vocabulary counts as `<UNK>`)."""
    _check_vocabulary(model, vocabulary, "sentence_log_probability")
    y = np.asarray([vocabulary.encode(sentence)], dtype=np.int64)
    return float(token_log_probabilities(_logits(model, shift_right(y)), y).sum())


def sentence_probability(model, vocabulary: Vocabulary, sentence: str | Sequence[str]) -> float:
    """P(sentence) = Π_t P(y<t> | y<1…t−1>) = exp(`sentence_log_probability`)."""
    return math.exp(sentence_log_probability(model, vocabulary, sentence))


def perplexity(model, vocabulary: Vocabulary, corpus: Iterable[str | Sequence[str]], batch_size: int = 256) -> float:
    """Per-token perplexity of the model on `corpus` (sentences): exp(−(1/N) Σ log P), N counting every
    token and each sentence's `<EOS>`."""
    _check_vocabulary(model, vocabulary, "perplexity")
    encoded = [vocabulary.encode(s) for s in corpus]
    if not encoded:
        raise LaminaError("perplexity: the corpus is empty")
    total, count = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        y = pad(encoded[start:start + batch_size])
        total += float(token_log_probabilities(_logits(model, shift_right(y)), y).sum())
        count += int((y != PAD_ID).sum())
    return math.exp(-total / count)


def next_token_distribution(logits: np.ndarray, temperature: float = 1.0, top_k: int | None = None) -> np.ndarray:
    """Sampling probabilities from logits (…, V): p ∝ exp(z/τ) over the top_k largest z (all if None), with
    `<PAD>` and `<UNK>` excluded; τ = 0 puts all the mass on the most likely token (argmax)."""
    z = np.array(logits, dtype=np.float64)
    z[..., [PAD_ID, UNK_ID]] = -np.inf
    if top_k is not None:
        k = min(int(top_k), z.shape[-1] - 2)
        kth = np.sort(z, axis=-1)[..., -k][..., None]
        z = np.where(z >= kth, z, -np.inf)
    if temperature == 0:
        p = np.zeros_like(z)
        np.put_along_axis(p, z.argmax(axis=-1)[..., None], 1.0, axis=-1)
        return p
    z = z / temperature
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=-1, keepdims=True)


def sample(model, vocabulary: Vocabulary, n: int = 1, temperature: float = 1.0, top_k: int | None = None,
           max_length: int = 50, seed: int | None = None, decode: bool = True) -> list:
    """n novel sequences (§5.4): from x<1> = `<EOS>`, draw y<t> from `next_token_distribution` of the model's
    ŷ<t> and feed it as x<t+1>, until `<EOS>` or `max_length` tokens. `<UNK>` is never drawn. Returns texts
    (or id lists, `<EOS>` left out, if not `decode`); the same `seed` gives the same samples."""
    _check_vocabulary(model, vocabulary, "sample")
    for arg, value, ok in (("n", n, isinstance(n, int) and n >= 1),
                           ("max_length", max_length, isinstance(max_length, int) and max_length >= 1),
                           ("temperature", temperature, isinstance(temperature, (int, float)) and temperature >= 0),
                           ("top_k", top_k, top_k is None or (isinstance(top_k, int) and top_k >= 1))):
        if not ok:
            raise LaminaError(f"sample: {arg!r} must be " + {"n": "an integer >= 1", "max_length": "an integer >= 1",
                                                             "temperature": "a number >= 0",
                                                             "top_k": "None or an integer >= 1"}[arg] +
                              f", got {value!r}")
    rng = np.random.default_rng(seed)
    token = np.full(n, EOS_ID, dtype=np.int64)
    done = np.zeros(n, dtype=bool)
    drawn = []
    for logits in _next_token_logits(model, token):
        p = next_token_distribution(logits, temperature, top_k)
        token[:] = [rng.choice(p.shape[-1], p=row) for row in p]
        token[done] = PAD_ID
        drawn.append(token.copy())
        done |= token == EOS_ID
        if done.all() or len(drawn) == max_length:
            break
    ids = np.stack(drawn, axis=1)
    sequences = [[int(t) for t in row if t not in (PAD_ID, EOS_ID)] for row in ids]
    return [vocabulary.decode(s) for s in sequences] if decode else sequences


# ---- runs -------------------------------------------------------------------------------------------
def load_vocabulary(checkpoint_dir) -> Vocabulary:
    """The vocabulary saved beside a language model's checkpoint."""
    return Vocabulary.load(Path(checkpoint_dir) / VOCABULARY_FILE)


def save_vocabulary(vocabulary: Vocabulary, checkpoint_dir) -> Path:
    return vocabulary.save(Path(checkpoint_dir) / VOCABULARY_FILE)
