"""The word cache gives the tokenizer's own ids, text for text (smec/word_cache.py)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from smec.encoders import MODEL_SPECS, resolve_model
from smec.errors import SmecError
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


RAW_WORDS = {"all-MiniLM-L6-v2": True, "tokenlearn-static-64d": False}   # both ways are tested


@pytest.mark.parametrize("name, max_seq_length", [(name, None) for name in MODEL_SPECS]
                         + [("all-MiniLM-L6-v2", 32)])
def test_the_word_cache_gives_the_tokenizers_ids(name, max_seq_length, monkeypatch):
    import smec.word_cache
    try:
        path = resolve_model(name)
    except SmecError as missing:
        if name in RAW_WORDS:
            raise
        pytest.skip(str(missing))                       # a registry model not installed here
    spec = tokenizer_spec(path, max_seq_length)
    if spec is None:
        pytest.skip(f"{name} tokenises inside the model")
    cached, whole = TextTokenizer(spec), TextTokenizer(replace(spec, word_cache=False))
    assert whole.cache is None
    if cached.cache is None:
        assert name not in RAW_WORDS
        pytest.skip(f"{name}'s tokenizer has no word cache")
    if name in RAW_WORDS:
        assert cached.cache.raw is RAW_WORDS[name]
    texts = corpus_texts()
    monkeypatch.setattr(smec.word_cache, "MAX_WORDS", 3000)     # the cache fills and clears
    clears = []
    clear = cached.cache.clear
    monkeypatch.setattr(cached.cache, "clear", lambda: (clears.append(1), clear()))
    for prompt in ("", "query: "):
        want = whole(texts, prompt)
        got = cached(texts, prompt)                           # cold, then warm
        assert pieces(*got) == pieces(*want)
        assert pieces(*cached(texts[::-1], prompt)) == pieces(*want)[::-1]
    assert len(clears) >= 2
    assert want[1].max() == spec.max_length                 # truncation was exercised


def test_a_static_model_truncates_as_its_tokenizer_json_says(tmp_path):
    """sentence-transformers applies a static model's tokenizer.json truncation as written
    (here: from the left, at 4 tokens); the pipeline's vectors must be encode()'s."""
    pytest.importorskip("model2vec")
    from smec.encoders import encode, load_model
    from smec.tokens import encode_tokens
    source = resolve_model("tokenlearn-static-64d")
    folder = tmp_path / "left"
    folder.mkdir()
    for item in source.iterdir():
        (folder / item.name).symlink_to(item)
    config = json.loads((source / "tokenizer.json").read_text())
    config["truncation"] = {**config["truncation"], "direction": "Left", "max_length": 4}
    (folder / "tokenizer.json").unlink()
    (folder / "tokenizer.json").write_text(json.dumps(config))
    texts = ["one two three four five six seven", "penguins live in the south", "short"]
    spec = tokenizer_spec(folder)
    tokenizer = TextTokenizer(spec)
    assert tokenizer.cache is None                      # left truncation: whole texts
    flat, lengths = tokenizer(texts)
    assert lengths.tolist()[:2] == [4, 4]
    np.testing.assert_allclose(encode_tokens(load_model(folder), spec, flat, lengths, 64),
                               encode(load_model(folder), texts), atol=2e-6)


def test_characters_the_tokenizer_does_not_split_at_send_a_text_through_whole():
    spec = tokenizer_spec(resolve_model("all-MiniLM-L6-v2"))
    needles = TextTokenizer(spec).cache.needles
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
