"""Text for language models (§5.4): word and character tokenizers, sentence splitting, and the
`Vocabulary` that maps tokens to ids and back (with `<PAD>`, `<EOS>` and `<UNK>`), saved as JSON.

    vocab = Vocabulary.build(["the cat sat.", "the dog sat."], level="word", min_count=2)
    vocab.encode("the cat sat.")        # [id(the), id(<UNK>), id(sat), id(.), id(<EOS>)]
    vocab.decode(vocab.encode("the dog sat."))   # 'the <UNK> sat .'

Ids: `<PAD>` = 0 (padding of a batch, never a target), `<EOS>` = 1, `<UNK>` = 2, then the corpus's
tokens by decreasing count (ties alphabetically), so the same corpus always gives the same ids.
"""
from __future__ import annotations

import collections
import json
import re
from pathlib import Path
from typing import Iterable, Sequence

from .errors import ConfigError, LaminaError
from .files import atomic_write

PAD, EOS, UNK = "<PAD>", "<EOS>", "<UNK>"
SPECIALS = (PAD, EOS, UNK)
PAD_ID, EOS_ID, UNK_ID = 0, 1, 2
LEVELS = ("word", "char")
VOCABULARY_FORMAT = 1

_WORD = re.compile(r"\w+(?:['’\-.]\w+)*|[^\w\s]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'“(\[]?[A-Z0-9])")


def word_tokenize(text: str, lowercase: bool = True) -> list[str]:
    """Words and punctuation marks: runs of letters/digits (with inner ' - . as in "don't", "4.00", "south-west")
    and every other non-space character on its own."""
    return _WORD.findall(text.lower() if lowercase else text)


def char_tokenize(text: str, lowercase: bool = False) -> list[str]:
    """Every character (spaces included) is a token."""
    return list(text.lower() if lowercase else text)


TOKENIZERS = {"word": word_tokenize, "char": char_tokenize}


def split_sentences(text: str) -> list[str]:
    """Sentences of running text: a break after . ! or ? followed by white space and a capital or a digit."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _check_level(level: str) -> str:
    if level not in LEVELS:
        raise ConfigError(f"Vocabulary: 'level' must be one of {', '.join(map(repr, LEVELS))}, got {level!r}")
    return level


class Vocabulary:
    """Tokens ↔ ids for one tokenizer (`level` "word" or "char", lowercased or not). A token outside the
    vocabulary encodes as `<UNK>`; `encode` appends `<EOS>` (the seed's y<T_y>) unless told not to."""

    def __init__(self, tokens: Sequence[str], level: str = "word", lowercase: bool = True,
                 counts: dict[str, int] | None = None):
        self.level, self.lowercase = _check_level(level), bool(lowercase)
        tokens = list(tokens)
        if tuple(tokens[:len(SPECIALS)]) != SPECIALS:
            raise LaminaError(f"Vocabulary: the first tokens must be {', '.join(SPECIALS)}, got {tokens[:3]}")
        if len(set(tokens)) != len(tokens):
            repeated = sorted(t for t, c in collections.Counter(tokens).items() if c > 1)
            raise LaminaError(f"Vocabulary: each token must appear once, got repeats {repeated[:5]}")
        self.tokens = tokens
        self.ids = {token: i for i, token in enumerate(tokens)}
        self.counts = dict(counts or {})

    @classmethod
    def build(cls, corpus: Iterable[str], level: str = "word", min_count: int = 1, lowercase: bool | None = None,
              max_size: int | None = None) -> "Vocabulary":
        """The vocabulary of `corpus` (an iterable of sentences): every token seen at least `min_count` times
        (the rarest dropped first beyond `max_size` tokens, specials included). `lowercase` defaults to True
        for words and False for characters."""
        _check_level(level)
        if int(min_count) < 1:
            raise ConfigError(f"Vocabulary.build: 'min_count' must be at least 1, got {min_count}")
        lowercase = (level == "word") if lowercase is None else bool(lowercase)
        tokenize = TOKENIZERS[level]
        counts = collections.Counter()
        for sentence in corpus:
            counts.update(tokenize(sentence, lowercase))
        for special in SPECIALS:
            counts.pop(special, None)
        kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        if max_size is not None:
            if int(max_size) <= len(SPECIALS):
                raise ConfigError(f"Vocabulary.build: 'max_size' must exceed {len(SPECIALS)} (the special tokens), "
                                  f"got {max_size}")
            kept = kept[:int(max_size) - len(SPECIALS)]
        return cls(list(SPECIALS) + kept, level, lowercase, {t: counts[t] for t in kept})

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self.ids

    def __repr__(self) -> str:
        return f"Vocabulary(level={self.level!r}, V={len(self)}, lowercase={self.lowercase})"

    def tokenize(self, text: str) -> list[str]:
        return TOKENIZERS[self.level](text, self.lowercase)

    def index(self, token: str) -> int:
        """The id of `token`, `<UNK>`'s for a token outside the vocabulary."""
        return self.ids.get(token, UNK_ID)

    def encode(self, sentence: str | Sequence[str], add_eos: bool = True) -> list[int]:
        """Ids of a sentence (text, tokenized here, or a list of tokens), ending with `<EOS>` if `add_eos`."""
        tokens = self.tokenize(sentence) if isinstance(sentence, str) else list(sentence)
        return [self.index(t) for t in tokens] + ([EOS_ID] if add_eos else [])

    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """The text of `ids`, stopping at the first `<EOS>` and leaving out `<PAD>` when `skip_special`
        (`<UNK>` stays, to show where a word was unknown); words are joined by spaces, characters by nothing."""
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.tokens):
                raise LaminaError(f"Vocabulary.decode: id {i} is outside the vocabulary [0, {len(self)})")
            if skip_special and i == EOS_ID:
                break
            if skip_special and i == PAD_ID:
                continue
            out.append(self.tokens[i])
        return (" " if self.level == "word" else "").join(out)

    # ---- saving ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": VOCABULARY_FORMAT, "level": self.level, "lowercase": self.lowercase,
                "tokens": self.tokens, "counts": self.counts}

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> "Vocabulary":
        if not isinstance(data, dict) or data.get("format") != VOCABULARY_FORMAT or \
                not isinstance(data.get("tokens"), list):
            raise LaminaError(f"{source}: not a lamina vocabulary (expected a JSON object with format "
                              f"{VOCABULARY_FORMAT} and a 'tokens' list)")
        return cls(data["tokens"], data.get("level", "word"), data.get("lowercase", True), data.get("counts"))

    def save(self, path) -> Path:
        """Write the vocabulary as JSON (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(self.to_dict(), ensure_ascii=False, indent=1))
        return path

    @classmethod
    def load(cls, path) -> "Vocabulary":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise LaminaError(f"no vocabulary at {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise LaminaError(f"{path} is corrupted (not valid JSON): {err}") from err
        return cls.from_dict(data, str(path))
