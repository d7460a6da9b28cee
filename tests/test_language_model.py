"""Language models (§5.4): the LanguageModel layer (float64 gradient checks, parity with an Embedding → LSTM/GRU →
Linear torch model and torch's cross-entropy, forward and backward), the masked sequence loss, sentence
probabilities against the step-by-step softmax, perplexity, sampling (temperature, top-k, <UNK>, <EOS>, seeds),
text datasets and the unigram baseline, and a short training run that beats the baseline."""
import math

import numpy as np
import pytest
import torch

import lamina as lm
from lamina.errors import LaminaError, ShapeError
from lamina.gradcheck import gradcheck
from lamina.language_model import (LanguageModel, Perplexity, SequenceSoftmaxCrossEntropy, next_token_distribution,
                                   pad, perplexity, sample, sentence_log_probability, sentence_probability,
                                   shift_right, text_dataset, token_log_probabilities, unigram_perplexity)
from lamina.registry import resolve
from lamina.tensor import Tensor
from lamina.testing import run_layer_test
from lamina.text import EOS_ID, PAD_ID, UNK_ID, Vocabulary

NAMES = ["anna", "hannah", "ann", "nan", "hana", "ada", "dana", "nada", "adah", "han"]


def _set(param, value):
    param.data = param.backend.asarray(np.asarray(value, dtype=np.float64), param.dtype)


@pytest.fixture
def vocab():
    return Vocabulary.build(NAMES, level="char")


@pytest.fixture
def model(vocab):
    lm.manual_seed(0)
    with lm.set_default_dtype("float64"):
        return LanguageModel(len(vocab), d=4, n_a=6)


# ---- the layer ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_run_layer_test(cell):
    ids = np.array([[1, 3, 4], [1, 2, 0]])
    report = run_layer_test(lambda: LanguageModel(5, d=3, n_a=4, cell=cell), ids.shape, input_data=ids,
                            expected_output_shape=(2, 3, 5))
    assert report.gradcheck.passed


def test_two_layers_with_dropout_between():
    lm.manual_seed(0)
    model = LanguageModel(7, d=3, n_a=4, num_layers=2, keep_prob=0.5)
    assert model(Tensor(np.array([[1, 2, 3]]))).shape == (1, 3, 7)
    assert len(model.parameters()) == 1 + 3 + 3 + 2          # E; W_x, W_a, b per LSTM; W, b
    assert isinstance(model.rnn[1], lm.nn.Dropout) and len(model.rnn) == 3


def test_registered():
    assert resolve("layers", "language_model") is LanguageModel
    assert resolve("losses", "sequence_softmax_cross_entropy") is SequenceSoftmaxCrossEntropy
    assert resolve("metrics", "perplexity") is Perplexity
    from lamina.hparams.search import objective_direction

    assert objective_direction("perplexity", None) == "min"          # hyper-parameter searches minimize it


def test_layer_errors():
    with pytest.raises(LaminaError, match="LanguageModel layer .*'cell' must be one of 'lstm', 'gru', 'rnn', "
                                          "got 'cnn'"):
        LanguageModel(5, cell="cnn")
    with pytest.raises(ShapeError, match=r"expected token ids of shape \(m, T\), got \(3,\)"):
        LanguageModel(5)(Tensor(np.array([1, 2, 3])))


def _torch_layout(cell, W):
    """Lamina gate blocks (columns) -> torch's (rows): LSTM [u f o c̃] -> [i f g o]; GRU [r u c̃] -> [r z n] with
    z = 1 − Γ_u."""
    blocks = np.split(np.asarray(W), 4 if cell == "lstm" else 3, axis=-1)
    blocks = [blocks[0], blocks[1], blocks[3], blocks[2]] if cell == "lstm" else [blocks[0], -blocks[1], blocks[2]]
    return np.concatenate(blocks, axis=-1).T


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_parity_with_torch_forward_and_backward(cell):
    lm.manual_seed(3)
    rng = np.random.default_rng(3)
    V, d, n_a, m, T = 9, 4, 5, 3, 6
    with lm.set_default_dtype("float64"):
        model = LanguageModel(V, d=d, n_a=n_a, cell=cell)
    y = rng.integers(1, V, (m, T))
    y[1, 4:] = PAD_ID
    y[2, 2:] = PAD_ID
    x = shift_right(y)
    logits = model(Tensor(x))
    loss = SequenceSoftmaxCrossEntropy()(logits, Tensor(y))
    loss.backward()

    rnn = model.rnn[0]
    embedding = torch.nn.Embedding(V, d).double()
    embedding.weight.data = torch.tensor(model.embedding.E.numpy())
    recurrent = (torch.nn.LSTM if cell == "lstm" else torch.nn.GRU)(d, n_a, batch_first=True).double()
    recurrent.weight_ih_l0.data = torch.tensor(_torch_layout(cell, rnn.W_x.numpy()))
    recurrent.weight_hh_l0.data = torch.tensor(_torch_layout(cell, rnn.W_a.numpy()))
    if cell == "lstm":
        recurrent.bias_ih_l0.data = torch.tensor(_torch_layout(cell, rnn.b.numpy()))
        recurrent.bias_hh_l0.data.zero_()
    else:
        recurrent.bias_ih_l0.data = torch.tensor(_torch_layout(cell, rnn.b_x.numpy()))
        recurrent.bias_hh_l0.data = torch.tensor(_torch_layout(cell, rnn.b_a.numpy()))
    head = torch.nn.Linear(n_a, V).double()
    head.weight.data = torch.tensor(model.head.layer.W.numpy().T.copy())
    head.bias.data = torch.tensor(model.head.layer.b.numpy())
    t_logits = head(recurrent(embedding(torch.tensor(x)))[0])
    t_loss = torch.nn.functional.cross_entropy(t_logits.reshape(-1, V), torch.tensor(y).reshape(-1),
                                               ignore_index=PAD_ID, reduction="sum") / m
    t_loss.backward()

    np.testing.assert_allclose(logits.numpy(), t_logits.detach().numpy(), atol=1e-10)
    assert loss.item() == pytest.approx(t_loss.item(), abs=1e-10)
    np.testing.assert_allclose(model.embedding.E.grad.numpy(), embedding.weight.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(_torch_layout(cell, rnn.W_x.grad.numpy()), recurrent.weight_ih_l0.grad.numpy(),
                               atol=1e-10)
    np.testing.assert_allclose(_torch_layout(cell, rnn.W_a.grad.numpy()), recurrent.weight_hh_l0.grad.numpy(),
                               atol=1e-10)
    np.testing.assert_allclose(model.head.layer.W.grad.numpy().T, head.weight.grad.numpy(), atol=1e-10)
    np.testing.assert_allclose(model.head.layer.b.grad.numpy(), head.bias.grad.numpy(), atol=1e-10)


# ---- the loss --------------------------------------------------------------------------------------------
def test_loss_is_the_masked_sum_over_time_divided_by_m():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((3, 4, 5))
    y = np.array([[1, 2, 3, 4], [4, 1, 0, 0], [3, 0, 0, 0]])
    log_p = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    by_hand = -sum(log_p[i, t, y[i, t]] for i in range(3) for t in range(4) if y[i, t] != PAD_ID) / 3
    with lm.set_default_dtype("float64"):
        loss = SequenceSoftmaxCrossEntropy()(Tensor(z), Tensor(y))
    assert loss.item() == pytest.approx(by_hand, rel=1e-12)
    assert token_log_probabilities(z, y).sum() == pytest.approx(-3 * by_hand, rel=1e-12)


def test_loss_gradcheck_with_padding():
    rng = np.random.default_rng(1)
    z = Tensor(rng.standard_normal((3, 4, 5)), dtype="float64")
    y = Tensor(np.array([[1, 2, 3, 4], [4, 1, 0, 0], [3, 0, 0, 0]]))
    upstream = 0.7
    result = gradcheck(lambda: SequenceSoftmaxCrossEntropy()(z, y) * upstream, {"logits": z})
    assert result.passed, result
    assert np.all(z.grad.numpy()[1, 2:] == 0) and np.all(z.grad.numpy()[2, 1:] == 0)


def test_loss_errors():
    z = Tensor(np.zeros((2, 3, 4)))
    with pytest.raises(ShapeError, match=r"sequence_softmax_cross_entropy: expected logits \(m, T, V\) and integer "
                                         r"targets \(m, T\), got logits \(2, 3, 4\) and targets \(2, 4\)"):
        SequenceSoftmaxCrossEntropy()(z, Tensor(np.ones((2, 4), dtype=np.int64)))
    with pytest.raises(ShapeError, match="of dtype float"):
        SequenceSoftmaxCrossEntropy()(z, Tensor(np.ones((2, 3))))


# ---- probabilities and perplexity -----------------------------------------------------------------------
def test_sentence_log_probability_equals_the_step_by_step_softmax(model, vocab):
    sentence = "hannah"
    y = vocab.encode(sentence)
    inputs, total = [EOS_ID], 0.0
    for target in y:                       # feed x<1..t> and read ŷ<t> off the last step, one step at a time
        with lm.no_grad():
            z = model(Tensor(np.array([inputs]))).numpy()[0, -1]
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        total += math.log(p[target])
        inputs.append(target)
    assert sentence_log_probability(model, vocab, sentence) == pytest.approx(total, rel=1e-10)
    assert sentence_probability(model, vocab, sentence) == pytest.approx(math.exp(total), rel=1e-10)
    assert sentence_log_probability(model, vocab, list(sentence)) == pytest.approx(total, rel=1e-10)


def test_unknown_tokens_count_as_unk(model, vocab):
    assert sentence_log_probability(model, vocab, "hqz") == \
        pytest.approx(sentence_log_probability(model, vocab, ["h", "<UNK>", "<UNK>"]), rel=1e-12)


def test_perplexity_is_exp_of_the_mean_negative_log_probability(model, vocab):
    corpus = ["anna", "dan", "hannah"]
    total = sum(sentence_log_probability(model, vocab, s) for s in corpus)
    N = sum(len(s) + 1 for s in corpus)
    assert perplexity(model, vocab, corpus) == pytest.approx(math.exp(-total / N), rel=1e-10)
    assert perplexity(model, vocab, corpus, batch_size=1) == pytest.approx(math.exp(-total / N), rel=1e-10)


def test_perplexity_of_a_uniform_model_is_V(model, vocab):
    _set(model.head.layer.W, np.zeros(model.head.layer.W.shape))
    _set(model.head.layer.b, np.full(len(vocab), 0.3))
    assert perplexity(model, vocab, ["anna", "ada", "hannah nan"]) == pytest.approx(len(vocab), rel=1e-12)
    y = pad([vocab.encode("anna"), vocab.encode("ad")])
    assert Perplexity()(np.zeros(y.shape + (len(vocab),)), y) == pytest.approx(len(vocab), rel=1e-12)


def test_a_vocabulary_of_another_size_is_refused(model):
    with pytest.raises(LaminaError, match=r"V = 4 \(the vocabulary's size\), but ids \(1, 1\) gave outputs"):
        perplexity(model, Vocabulary.build(["a"], level="char"), ["a"])


# ---- sampling ---------------------------------------------------------------------------------------------
def test_next_token_distribution():
    z = np.array([[2.0, 1.0, 5.0, 0.5, -1.0, 0.0]])          # PAD=0 and UNK=2 are excluded
    p = next_token_distribution(z, temperature=2.0)
    allowed = [1, 3, 4, 5]
    expected = np.exp(z[0, allowed] / 2.0) / np.exp(z[0, allowed] / 2.0).sum()
    np.testing.assert_allclose(p[0, allowed], expected, rtol=1e-12)
    assert p[0, PAD_ID] == 0 and p[0, UNK_ID] == 0
    top2 = next_token_distribution(z, top_k=2)
    assert set(np.flatnonzero(top2[0])) == {1, 3}
    np.testing.assert_allclose(top2[0, [1, 3]], np.exp([1.0, 0.5]) / np.exp([1.0, 0.5]).sum(), rtol=1e-12)
    np.testing.assert_array_equal(next_token_distribution(z, temperature=0), [[0, 1, 0, 0, 0, 0]])
    cold, hot = next_token_distribution(z, temperature=0.1), next_token_distribution(z, temperature=10.0)
    assert cold[0, 1] > 0.99 and hot.max() < 0.3


def _greedy(model, vocab, max_length):
    inputs = [EOS_ID]
    for _ in range(max_length):
        with lm.no_grad():
            z = model(Tensor(np.array([inputs]))).numpy()[0, -1]
        z[[PAD_ID, UNK_ID]] = -np.inf
        token = int(z.argmax())
        if token == EOS_ID:
            break
        inputs.append(token)
    return vocab.decode(inputs[1:])


def test_temperature_zero_and_top_1_give_the_argmax_path(model, vocab):
    greedy = _greedy(model, vocab, 8)
    assert sample(model, vocab, n=3, temperature=0, max_length=8, seed=1) == [greedy] * 3
    assert sample(model, vocab, n=2, top_k=1, max_length=8, seed=5) == [greedy] * 2
    assert sample(model, vocab, n=1, temperature=1e-4, max_length=8, seed=7) == [greedy]


def test_top_k_restricts_every_draw(model, vocab):
    k = 2
    for ids in sample(model, vocab, n=20, top_k=k, max_length=6, seed=0, decode=False):
        inputs = [EOS_ID]
        for token in ids:
            with lm.no_grad():
                z = model(Tensor(np.array([inputs]))).numpy()[0, -1]
            z[[PAD_ID, UNK_ID]] = -np.inf
            assert token in np.argsort(z)[-k:]
            inputs.append(token)


def test_unk_is_never_drawn(model, vocab):
    bias = model.head.layer.b.numpy().copy()
    bias[UNK_ID] = 50.0                                        # the model all but always predicts <UNK>
    _set(model.head.layer.b, bias)
    samples = sample(model, vocab, n=20, max_length=10, seed=0, decode=False)
    assert all(UNK_ID not in s for s in samples)
    assert sum(len(s) for s in samples) > 0


def test_stops_at_eos_or_max_length(model, vocab):
    bias = model.head.layer.b.numpy().copy()
    _set(model.head.layer.b, np.where(np.arange(len(vocab)) == EOS_ID, 50.0, bias))
    assert sample(model, vocab, n=4, seed=0) == [""] * 4
    _set(model.head.layer.b, np.where(np.arange(len(vocab)) == EOS_ID, -50.0, bias))
    assert [len(s) for s in sample(model, vocab, n=4, max_length=7, seed=0, decode=False)] == [7] * 4


def test_seeded_samples_are_reproducible(model, vocab):
    first = sample(model, vocab, n=10, max_length=10, seed=42)
    assert sample(model, vocab, n=10, max_length=10, seed=42) == first
    assert sample(model, vocab, n=10, max_length=10, seed=43) != first
    assert all(set(s) <= set(vocab.tokens[3:]) for s in first)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_step_by_step_logits_equal_the_whole_sequences(cell):
    """LanguageModel.step carries every layer's states on: feeding a sequence one token at a time gives the logits
    of running it whole."""
    lm.manual_seed(1)
    with lm.set_default_dtype("float64"):
        model = LanguageModel(9, d=4, n_a=5, cell=cell, num_layers=2, keep_prob=0.5).eval()
    ids = np.random.default_rng(1).integers(0, 9, size=(3, 6))
    whole = model(Tensor(ids)).numpy()
    states = None
    for t in range(ids.shape[1]):
        logits, states = model.step(Tensor(ids[:, t]), states)
        np.testing.assert_allclose(logits.numpy(), whole[:, t], rtol=1e-12, atol=1e-12)
    assert len(states) == 2 and len(states[0]) == (2 if cell == "lstm" else 1)


class _Whole(lm.nn.Layer):
    """A language model hidden behind a plain layer: sample() reruns the prefix for it."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, ids):
        return self.inner(ids)


def test_stepping_samples_what_rerunning_the_prefix_samples(model, vocab):
    stepped = sample(model, vocab, n=8, max_length=12, seed=5, temperature=0.8)
    assert sample(_Whole(model), vocab, n=8, max_length=12, seed=5, temperature=0.8) == stepped
    assert model.training         # sampling puts the model back in the mode it found it in


def test_sample_argument_errors(model, vocab):
    with pytest.raises(LaminaError, match="sample: 'temperature' must be a number >= 0, got -1"):
        sample(model, vocab, temperature=-1)
    with pytest.raises(LaminaError, match="sample: 'top_k' must be None or an integer >= 1, got 0"):
        sample(model, vocab, top_k=0)
    with pytest.raises(LaminaError, match="sample: 'n' must be an integer >= 1, got 0"):
        sample(model, vocab, n=0)


# ---- data and the baseline ---------------------------------------------------------------------------------
def test_shift_right_feeds_the_previous_target():
    y = np.array([[5, 6, 7, 1], [8, 1, 0, 0]])
    np.testing.assert_array_equal(shift_right(y), [[1, 5, 6, 7], [1, 8, 1, 0]])


def test_text_dataset_builds_the_vocabulary_from_the_training_split():
    sentences = [f"w{i} common" for i in range(20)]
    data = text_dataset("toy", sentences, min_count=1, split="50/50")
    train_words = {s.split()[0] for s in np.array(sentences)[[i for i in range(20)
                                                                 if f"w{i} common" in _texts(data, data.train)]]}
    assert set(data.vocabulary.tokens[3:]) == train_words | {"common"}
    assert data.num_classes == len(data.vocabulary) and data.input_shape == (3,)
    np.testing.assert_array_equal(data.dev.y[:, 0], UNK_ID)          # every dev word is new
    np.testing.assert_array_equal(data.dev.y[:, 2], EOS_ID)
    np.testing.assert_array_equal(data.train.X, shift_right(data.train.y))


def _texts(data, split):
    return [data.vocabulary.decode(row) for row in split.y]


def test_max_length_cuts_long_sentences():
    data = text_dataset("toy", ["a b c d e", "a b"] * 5, max_length=3, split="60/40")
    assert data.train.y.shape[1] == 3


def test_unigram_perplexity_by_hand():
    train = np.array([[3, 3, 4, 1], [3, 1, 0, 0]])          # counts: EOS 2, 3: 3, 4: 1 -> +1 each over V = 5
    probs = {1: 3 / 10, 2: 1 / 10, 3: 4 / 10, 4: 2 / 10}
    dev = np.array([[4, 3, 1], [2, 1, 0]])
    expected = math.exp(-np.mean([math.log(probs[t]) for t in [4, 3, 1, 2, 1]]))
    assert unigram_perplexity(train, dev, 5) == pytest.approx(expected, rel=1e-12)


def test_training_beats_the_unigram_baseline():
    lm.manual_seed(0)
    data = text_dataset("toy", ["abcabc", "abcab", "bcabca", "cabcab", "abcabca"] * 8, level="char", split="80/20")
    model = LanguageModel(data.num_classes, d=4, n_a=12)
    loss = SequenceSoftmaxCrossEntropy()
    lm.training.fit(model, loss, lm.optim.Adam(model.parameters(), lr=0.05), data.train, epochs=15, batch_size=8,
                    progress=False)
    dev_corpus = _texts(data, data.dev)
    learned = perplexity(model, data.vocabulary, dev_corpus)
    baseline = unigram_perplexity(data.train.y, data.dev.y, data.num_classes)
    assert learned < baseline / 2, (learned, baseline)
    assert Perplexity()(lm.training.predict(model, data.dev.X), data.dev.y) == pytest.approx(learned, rel=1e-5)
