"""Tokenise a word once per process, not once per occurrence: the same ids, less CPU.

A tokenizer whose pre-tokenizer first splits on whitespace (``WhitespaceSplit``,
``Whitespace``, ``BertPreTokenizer``, then only per-piece steps such as a ``Metaspace`` that
prepends to every piece) tokenises each whitespace-separated word on its own: a text's ids are
its words' ids end to end, then truncation, then the post-processor's special tokens. Real text
repeats its words (Zipf), so :class:`WordCache` splits each text with ``str.split``, looks every
word up in a dict and tokenises only the words it has not seen. Assembly, truncation and the
special tokens are numpy. Two ways to cut words, chosen from ``tokenizer.json``:

- **raw**: the normaliser works within words (``BertNormalizer``, ``Lowercase``, ``NFD``,
  ``StripAccents``, ``Strip``: per character, or, for NFD's reordering, per run of combining
  marks, which whitespace ends), so the raw text is split and each raw word goes through the
  whole tokenizer; no text is normalised as a whole (that is half the cost for BERT).
- **normalised**: any other normaliser (NFKC, a SentencePiece charsmap) runs on each whole text,
  as the tokenizer runs it, and the normalised words go through the tokenizer without it.

Exactness: a text goes through the tokenizer whole if it holds an added token's content
(``[CLS]``, ``<unk>``: the tokenizer finds those before it splits) or a character that
``str.split`` takes for whitespace and this tokenizer does not split at, found by trying each one
when the cache is built (U+001C..U+001F for Rust's ``char::is_whitespace``; U+000B, U+000C and
U+0085 too for BERT, whose normaliser deletes control characters). The result equals
``encode_batch`` id for id (tests/test_tokens.py: every registry model installed, at least
all-MiniLM-L6-v2 and the static model, on a real corpus and adversarial text). Per core on
SciFact + ArguAna (benchmarks/tokenize_words.py): 1.8-2.2x the tokenizer's speed on a cold
cache, 5-7x warm. A tokenizer this cannot treat (a ``Metaspace`` first, byte-level BPE, BPE
dropout, truncation from the left or with a stride, padding, special tokens that are not a
fixed prefix and suffix) gets ``None`` from :meth:`WordCache.for_tokenizer`; the caller
tokenises whole texts.
"""
from __future__ import annotations

import json
from itertools import repeat

import numpy as np

WHITESPACE_SPLITS = {"WhitespaceSplit", "Whitespace", "BertPreTokenizer"}
PER_PIECE_STEPS = WHITESPACE_SPLITS | {"Punctuation", "Digits"}
PER_CHARACTER_NORMALIZERS = {"BertNormalizer", "Lowercase", "NFD", "StripAccents", "Strip"}
PY_WHITESPACE = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
MAX_WORDS = 500_000                   # cache bounds (~60 MB of short words); cleared when
MAX_CHARACTERS = 16_000_000           # either is reached (URLs and hashes are long words)
PROBES = [("a", "b"), ("th", "e"), ("1", "2"), ("x", "-")]   # contexts a character must split
SEPARATOR = "\n"                      # joins a chunk's texts for one scan per needle


def _steps(component: dict | None, sequence_key: str) -> list[dict]:
    if not component:
        return []
    return component.get(sequence_key, []) if component.get("type") == "Sequence" else [component]


def word_local(config: dict) -> bool:
    """True if ``tokenizer.json``'s ``config`` tokenises whitespace-separated words apart."""
    steps = _steps(config.get("pre_tokenizer"), "pretokenizers")
    if not steps or steps[0].get("type") not in WHITESPACE_SPLITS:
        return False
    for step in steps[1:]:
        if step.get("type") == "Metaspace":
            scheme = step.get("prepend_scheme",
                              "always" if step.get("add_prefix_space", True) else "never")
            if scheme != "always":
                return False
        elif step.get("type") not in PER_PIECE_STEPS:
            return False
    return not config.get("model", {}).get("dropout")


def raw_words(config: dict) -> bool:
    """True if the raw words can be the keys: a per-character normaliser, and no added token
    that is matched in the normalised text."""
    per_character = all(step.get("type") in PER_CHARACTER_NORMALIZERS
                        for step in _steps(config.get("normalizer"), "normalizers"))
    return per_character and not any(t.get("normalized") for t in config.get("added_tokens", []))


class WordCache:
    """``cache(texts) -> (flat int32 ids, int32 lengths)``, equal to the tokenizer's own
    ``encode_batch`` with its truncation and, if ``specials``, its special tokens."""

    def __init__(self, tokenizer, specials: bool, raw: bool):
        from tokenizers import Tokenizer
        config = json.loads(tokenizer.to_str())
        config.update(truncation=None, padding=None)
        self.full_tokenizer, self.specials, self.raw = tokenizer, specials, raw
        self.untruncated = Tokenizer.from_str(json.dumps(config))
        self.word_tokenizer = (self.untruncated if raw else
                               Tokenizer.from_str(json.dumps({**config, "normalizer": None})))
        self.normalize = (str if raw or tokenizer.normalizer is None
                          else tokenizer.normalizer.normalize_str)
        prefix, suffix = _special_tokens(tokenizer, specials)
        self.prefix, self.suffix = np.asarray(prefix, np.int32), np.asarray(suffix, np.int32)
        truncation = tokenizer.truncation
        self.limit = (truncation["max_length"] - len(prefix) - len(suffix)) if truncation else None
        unsplit = [c for c in PY_WHITESPACE if any(
            self._tokens(f"{a}{c}{b}") != self._tokens(a) + self._tokens(b) for a, b in PROBES)]
        self.needles = [t["content"] for t in config.get("added_tokens", []) if t["content"]]
        self.needles += unsplit
        self.clear()

    def _tokens(self, text: str) -> list[int]:
        return self.untruncated.encode(text, add_special_tokens=False).ids

    @classmethod
    def for_tokenizer(cls, tokenizer, specials: bool) -> "WordCache | None":
        """A cache for this ``tokenizers.Tokenizer`` (its truncation as set), or None."""
        config = json.loads(tokenizer.to_str())
        truncation = tokenizer.truncation
        if not word_local(config) or tokenizer.padding or (
                truncation and (truncation["direction"] != "right" or truncation["stride"])):
            return None
        around = _special_tokens(tokenizer, specials)
        if around is None or (truncation and truncation["max_length"] <= sum(map(len, around))):
            return None
        return cls(tokenizer, specials, raw_words(config))

    def clear(self) -> None:
        self.index: dict[str, int] = {}
        self.characters = 0
        self.ids = np.zeros(0, np.int32)       # every cached word's ids, end to end
        self.starts = np.zeros(0, np.int64)
        self.lengths = np.zeros(0, np.int64)

    def _learn(self, words: list[str]) -> None:
        encoded = [e.ids for e in self.word_tokenizer.encode_batch_fast(
            words, add_special_tokens=False)]
        lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
        self.starts = np.concatenate([self.starts, len(self.ids) + np.cumsum(lengths) - lengths])
        self.lengths = np.concatenate([self.lengths, lengths])
        self.ids = np.concatenate([self.ids, np.fromiter(
            (i for row in encoded for i in row), np.int32, int(lengths.sum()))])
        first = len(self.index)
        self.index.update(zip(words, range(first, first + len(words))))
        self.characters += sum(map(len, words))

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        normalized = [self.normalize(t) for t in texts]
        whole_rows = sorted(self._holding_needles(texts) | (
            set() if self.raw else self._holding_needles(normalized)))
        for i in whole_rows:
            normalized[i] = ""
        split = [n.split() for n in normalized]
        counts = np.fromiter(map(len, split), np.int64, len(split))
        words = [w for ws in split for w in ws]
        at = np.fromiter(map(self.index.get, words, repeat(-1)), np.int64, len(words))
        if (at < 0).any():
            new = list(dict.fromkeys(words[i] for i in np.flatnonzero(at < 0)))
            if (len(self.index) + len(new) > MAX_WORDS
                    or self.characters + sum(map(len, new)) > MAX_CHARACTERS):
                self.clear()                              # full: keep this chunk's words
                new = list(dict.fromkeys(words))
            self._learn(new)
            at = np.fromiter(map(self.index.__getitem__, words), np.int64, len(words))
        flat, lengths = self._assemble(at, counts)
        if whole_rows:
            flat, lengths = self._splice(flat, lengths, whole_rows,
                                         [texts[i] for i in whole_rows])
        return flat, lengths

    def _holding_needles(self, texts: list[str]) -> set[int]:
        """Indices of the texts that hold a needle: one scan of the joined chunk per needle."""
        if any(SEPARATOR in needle for needle in self.needles):
            return {i for i, t in enumerate(texts) if any(n in t for n in self.needles)}
        joined = SEPARATOR.join(texts)
        ends = np.cumsum([len(t) + 1 for t in texts])
        found = set()
        for needle in self.needles:
            at = joined.find(needle)
            while at >= 0:
                found.add(int(np.searchsorted(ends, at, side="right")))
                at = joined.find(needle, at + 1)
        return found

    def _assemble(self, at: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Concatenate the words' ids per text, truncate, add the special tokens."""
        word_lengths = self.lengths[at]
        total = int(word_lengths.sum())
        before = np.cumsum(word_lengths) - word_lengths          # a word's first token in `ids`
        gather = np.repeat(self.starts[at] - before, word_lengths) + np.arange(total)
        text_of_token = np.repeat(np.repeat(np.arange(len(counts)), counts), word_lengths)
        content = np.bincount(text_of_token, minlength=len(counts)).astype(np.int64)
        first = np.cumsum(content) - content
        position = np.arange(total) - first[text_of_token]
        if self.limit is not None:
            keep = position < self.limit
            gather, text_of_token, position = gather[keep], text_of_token[keep], position[keep]
            content = np.minimum(content, self.limit)
        lengths = content + len(self.prefix) + len(self.suffix)
        out_first = np.cumsum(lengths) - lengths
        flat = np.empty(int(lengths.sum()), np.int32)
        flat[out_first[text_of_token] + len(self.prefix) + position] = self.ids[gather]
        for k, token in enumerate(self.prefix):
            flat[out_first + k] = token
        for k, token in enumerate(self.suffix):
            flat[out_first + len(self.prefix) + content + k] = token
        return flat, lengths.astype(np.int32)

    def _splice(self, flat: np.ndarray, lengths: np.ndarray, rows: list[int], texts: list[str]
                ) -> tuple[np.ndarray, np.ndarray]:
        """Replace the ``rows`` (tokenised as empty) by their texts tokenised whole."""
        own = [np.asarray(e.ids, np.int32) for e in self.full_tokenizer.encode_batch_fast(
            texts, add_special_tokens=self.specials)]
        pieces = np.split(flat, np.cumsum(lengths)[:-1])
        for row, ids in zip(rows, own):
            pieces[row] = ids
            lengths[row] = len(ids)
        return np.concatenate(pieces), lengths


def _special_tokens(tokenizer, specials: bool) -> tuple[list[int], list[int]] | None:
    """The ids the post-processor puts before and after a text's own, or None if they are not
    a fixed prefix and suffix."""
    bare = tokenizer.encode("a", add_special_tokens=False).ids
    full = tokenizer.encode("a", add_special_tokens=specials).ids
    starts = [i for i in range(len(full) - len(bare) + 1) if full[i:i + len(bare)] == bare]
    if not bare or len(starts) != 1:
        return None
    return full[:starts[0]], full[starts[0] + len(bare):]
