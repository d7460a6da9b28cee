"""Tokenizers and the Vocabulary (§5.4): ids, min_count, unknown words, round trips, JSON save/load."""
import json

import pytest

from lamina.errors import ConfigError, LaminaError
from lamina.text import (EOS, EOS_ID, PAD, PAD_ID, UNK, UNK_ID, Vocabulary, char_tokenize, split_sentences,
                         word_tokenize)

CORPUS = ["The cat sat on the mat.", "The dog sat on the log!", "A cat, a dog: friends?"]


def test_word_tokenizer_keeps_punctuation_and_inner_marks():
    assert word_tokenize("Dogs have an average lifespan of 12 years.") == \
        ["dogs", "have", "an", "average", "lifespan", "of", "12", "years", "."]
    assert word_tokenize("Don't go south-west at 4.00pm, OK?", lowercase=False) == \
        ["Don't", "go", "south-west", "at", "4.00pm", ",", "OK", "?"]


def test_char_tokenizer_keeps_every_character():
    assert char_tokenize("Ab c") == ["A", "b", " ", "c"]
    assert char_tokenize("Ab c", lowercase=True) == ["a", "b", " ", "c"]


def test_split_sentences():
    text = "Hundreds fled. A new blaze near Goulburn closed the road! Was it 4.00pm? 12 people left."
    assert split_sentences(text) == ["Hundreds fled.", "A new blaze near Goulburn closed the road!",
                                     "Was it 4.00pm?", "12 people left."]


def test_special_tokens_come_first():
    vocab = Vocabulary.build(CORPUS)
    assert vocab.tokens[:3] == [PAD, EOS, UNK]
    assert (vocab.index(PAD), vocab.index(EOS), vocab.index(UNK)) == (PAD_ID, EOS_ID, UNK_ID)


def test_ids_by_decreasing_count_then_alphabetically():
    vocab = Vocabulary.build(CORPUS)
    # the: 4, a: 2, cat: 2, dog: 2, on: 2, sat: 2, then the singletons alphabetically
    assert vocab.tokens[3:9] == ["the", "a", "cat", "dog", "on", "sat"]
    assert vocab.counts["the"] == 4
    assert vocab.tokens[9:] == sorted(vocab.tokens[9:])


def test_min_count_turns_rare_words_into_unk():
    vocab = Vocabulary.build(CORPUS, min_count=2)
    assert set(vocab.tokens[3:]) == {"the", "a", "cat", "dog", "on", "sat"}
    assert vocab.encode("the cat sat on the mat.") == [vocab.index(w) for w in ["the", "cat", "sat", "on", "the"]] + \
        [UNK_ID, UNK_ID, EOS_ID]
    assert vocab.decode(vocab.encode("the cat sat on the mat.")) == "the cat sat on the <UNK> <UNK>"


def test_unknown_words_encode_as_unk():
    vocab = Vocabulary.build(CORPUS)
    assert "zebra" not in vocab
    assert vocab.encode("the zebra", add_eos=False) == [vocab.index("the"), UNK_ID]


def test_word_round_trip():
    vocab = Vocabulary.build(CORPUS)
    for sentence in CORPUS:
        ids = vocab.encode(sentence)
        assert ids[-1] == EOS_ID and UNK_ID not in ids
        assert vocab.decode(ids) == " ".join(word_tokenize(sentence))


def test_char_round_trip_is_exact():
    names = ["Anna", "Bob", "Zoë-Lee"]
    vocab = Vocabulary.build(names, level="char")
    assert vocab.lowercase is False
    for name in names:
        assert vocab.decode(vocab.encode(name)) == name
    assert vocab.decode(vocab.encode("Anx")) == "An<UNK>"


def test_decode_stops_at_eos_and_skips_padding():
    vocab = Vocabulary.build(["ab"], level="char")
    a, b = vocab.index("a"), vocab.index("b")
    assert vocab.decode([a, PAD_ID, b, EOS_ID, a]) == "ab"
    assert vocab.decode([a, EOS_ID, b], skip_special=False) == "a<EOS>b"
    with pytest.raises(LaminaError, match="id 99 is outside the vocabulary"):
        vocab.decode([99])


def test_max_size_keeps_the_most_frequent():
    vocab = Vocabulary.build(CORPUS, max_size=5)
    assert vocab.tokens == [PAD, EOS, UNK, "the", "a"]
    with pytest.raises(ConfigError, match="max_size"):
        Vocabulary.build(CORPUS, max_size=3)


def test_json_round_trip(tmp_path):
    vocab = Vocabulary.build(CORPUS, min_count=2)
    path = vocab.save(tmp_path / "sub" / "vocabulary.json")
    data = json.loads(path.read_text())
    assert data["tokens"] == vocab.tokens and data["level"] == "word"
    loaded = Vocabulary.load(path)
    assert loaded.tokens == vocab.tokens and loaded.counts == vocab.counts
    assert loaded.encode("a cat on the mat") == vocab.encode("a cat on the mat")


def test_char_vocabulary_json_keeps_non_ascii(tmp_path):
    vocab = Vocabulary.build(["Zoë", "Chloé"], level="char", lowercase=True)
    loaded = Vocabulary.load(vocab.save(tmp_path / "v.json"))
    assert loaded.level == "char" and loaded.lowercase is True
    assert loaded.decode(loaded.encode("ZOË")) == "zoë"


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ConfigError, match="'level' must be one of 'word', 'char', got 'byte'"):
        Vocabulary.build(CORPUS, level="byte")
    with pytest.raises(ConfigError, match="'min_count' must be at least 1, got 0"):
        Vocabulary.build(CORPUS, min_count=0)
    with pytest.raises(LaminaError, match="first tokens must be"):
        Vocabulary(["a", "b", "c"])
    with pytest.raises(LaminaError, match="repeats"):
        Vocabulary([PAD, EOS, UNK, "a", "a"])
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(LaminaError, match="not a lamina vocabulary"):
        Vocabulary.load(tmp_path / "bad.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(LaminaError, match="not valid JSON"):
        Vocabulary.load(tmp_path / "broken.json")
    with pytest.raises(LaminaError, match="no vocabulary at"):
        Vocabulary.load(tmp_path / "missing.json")
