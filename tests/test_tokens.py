"""The word cache gives the tokenizer's own ids, text for text (smec/word_cache.py)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from smec.encoders import resolve_model
from smec.tokens import TextTokenizer, tokenizer_spec

MINI = Path(__file__).resolve().parents[1] / "smec" / "datasets" / "scifact-mini" / "corpus.jsonl"

ADVERSARIAL = [
    "", " ", "  two  spaces ", "a\x1cb c\x1fd", "vertical\x0btab form\x0cfeed next\x85line",
    "tab\there\u3000ideographic\u00a0nbsp\u2028line\u2029para\u202fnarrow",
    "[CLS] inside [SEP] and [MASK]", "<unk> and <pad> inside", "x[UNK]y",
    "é\u0301 café ﬁ ＡＢＣ Σίσυφος ΣΑΣ İstanbul", "中文字符测试 mixed英文",
    "▁metaspace▁in text",
    "x" * 300, "a\u200bb zero\u200dwidth", "\x00nul\x07bell", "line\nbreak\r\nx",
    "...!!!??? (parens) [brackets]", "1234567890 3.14159 1e-5", "emoji 😀🎉 test",
    "the same word the same word " * 200,
]


def corpus_texts() -> list[str]:
    rows = [json.loads(line) for line in MINI.read_text().splitlines()]
    return ADVERSARIAL + [f"{r.get('title', '')} {r['text']}".strip() for r in rows]


def pieces(flat: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
    return [p.tolist() for p in np.split(flat, np.cumsum(lengths)[:-1])]


@pytest.mark.parametrize("name, max_seq_length, raw", [("all-MiniLM-L6-v2", None, True),
                                                       ("all-MiniLM-L6-v2", 32, True),
                                                       ("tokenlearn-static-64d", None, False)])
def test_the_word_cache_gives_the_tokenizers_ids(name, max_seq_length, raw, monkeypatch):
    if name.startswith("tokenlearn"):
        pytest.importorskip("model2vec")
    import smec.word_cache
    spec = tokenizer_spec(resolve_model(name), max_seq_length)
    cached, whole = TextTokenizer(spec), TextTokenizer(replace(spec, word_cache=False))
    assert cached.words is not None and whole.words is None
    assert cached.words.raw is raw                       # both ways of cutting words are tested
    texts = corpus_texts()
    monkeypatch.setattr(smec.word_cache, "MAX_WORDS", 3000)     # the cache fills and clears
    clears = []
    clear = cached.words.clear
    monkeypatch.setattr(cached.words, "clear", lambda: (clears.append(1), clear()))
    for prompt in ("", "query: "):
        want = whole(texts, prompt)
        got = cached(texts, prompt)                           # cold, then warm
        assert pieces(*got) == pieces(*want)
        assert pieces(*cached(texts[::-1], prompt)) == pieces(*want)[::-1]
    assert len(clears) >= 2
    assert want[1].max() == spec.max_length                 # truncation was exercised


def test_characters_the_tokenizer_does_not_split_at_send_a_text_through_whole():
    spec = tokenizer_spec(resolve_model("all-MiniLM-L6-v2"))
    needles = TextTokenizer(spec).words.needles
    # BERT's normaliser deletes these control characters; str.split() splits at them
    assert {"\x0b", "\x0c", "\x1c", "\x85", "[CLS]"} <= set(needles)
    assert " " not in needles and "\t" not in needles and "\u3000" not in needles


def test_tokenizers_whose_words_interact_get_no_cache(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    from smec.word_cache import WordCache
    vocab = {"<unk>": 0, "▁a": 1, "▁b": 2, "▁": 3}
    metaspace_first = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    metaspace_first.pre_tokenizer = pre_tokenizers.Metaspace()   # "a  b" has a "▁" piece
    assert WordCache.for_tokenizer(metaspace_first, specials=False) is None
    after_split = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    after_split.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                         pre_tokenizers.Metaspace()])
    assert WordCache.for_tokenizer(after_split, specials=False) is not None
    first_only = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    first_only.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(prepend_scheme="first")])
    assert WordCache.for_tokenizer(first_only, specials=False) is None
    byte_level = Tokenizer(models.BPE())
    byte_level.pre_tokenizer = pre_tokenizers.ByteLevel()
    assert WordCache.for_tokenizer(byte_level, specials=False) is None
