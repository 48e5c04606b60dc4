"""Tokenise apart from the model, encode by a token budget (the ETL's fast path; no Ray here).

``SentenceTransformer.encode`` tokenises, pads and runs the model in one call, in the process
that holds the model. At scale the tokeniser (CPU) should run in the read tasks, beside the
GPU, and the model should see batches of equal token cost. :func:`tokenizer_spec` finds a
model's ``tokenizer.json`` and its settings; :class:`TextTokenizer` turns texts into one flat
int32 array plus lengths (what travels between Ray stages), tokenising each distinct word once
(:mod:`smec.word_cache`); :func:`encode_tokens` sorts by length,
cuts batches of at most ``batch_tokens`` padded tokens, runs the model's modules on them and
returns the vectors in input order, equal to ``encode`` (checked in tests/test_encoders.py).

Supported: a first module ``Transformer`` (text only, no lower-casing) or ``StaticEmbedding``,
and no pooling that leaves the prompt out. Anything else gets ``None`` from
:func:`tokenizer_spec` and the caller falls back to ``encode`` on texts.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class TokenizerSpec:
    tokenizer_file: str
    kind: str                 # "transformer": padded ids + mask; "static": ids + offsets
    max_length: int | None    # truncation (with special tokens); None: no limit
    word_cache: bool = True   # tokenise each distinct word once where that is exact


def tokenizer_spec(model_path: Path | str, max_seq_length: int | None = None,
                   word_cache: bool = True) -> TokenizerSpec | None:
    """How to tokenise for the model at ``model_path`` outside it, or None if unsupported."""
    root = Path(model_path)
    try:
        modules = json.loads((root / "modules.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not modules:
        return None
    first, rest = modules[0], modules[1:]
    folder = root / first.get("path", "")
    for module in rest:
        if module["type"].endswith("Pooling"):
            pooling = json.loads((root / module["path"] / "config.json").read_text())
            if not pooling.get("include_prompt", True):
                return None     # the pooling needs the prompt's length: encode() knows it
    if not (folder / "tokenizer.json").is_file():
        return None
    if first["type"].endswith("StaticEmbedding"):
        # sentence-transformers keeps tokenizer.json's own truncation for a static model (the
        # tokenizer applies it as written; max_length here is for the record)
        truncation = json.loads((folder / "tokenizer.json").read_text()).get("truncation")
        return TokenizerSpec(str(folder / "tokenizer.json"), "static",
                             (truncation or {}).get("max_length"), word_cache)
    if not first["type"].endswith("Transformer"):
        return None
    config_file = folder / "sentence_bert_config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    if config.get("do_lower_case"):
        return None
    limit = max_seq_length or config.get("max_seq_length")
    return TokenizerSpec(str(folder / "tokenizer.json"), "transformer", limit, word_cache)


TOKENIZE_CHUNK = 2048   # texts per call: encode_batch's Encoding objects cost ~30x the ids


class TextTokenizer:
    """A model's tokenizer outside the model: ``tokenizer(texts, prompt) -> (flat, lengths)``,
    flat int32 token ids and an int32 length per text, special tokens and truncation as the
    model's ``encode`` has them. Each distinct word is tokenised once per process
    (:class:`smec.word_cache.WordCache`) where that is exact and ``spec.word_cache`` is on."""

    def __init__(self, spec: TokenizerSpec):
        from tokenizers import Tokenizer

        from smec.word_cache import WordCache
        self.spec = spec
        self.backend = Tokenizer.from_file(spec.tokenizer_file)
        self.backend.no_padding()
        if spec.kind == "static":
            pass            # sentence-transformers keeps tokenizer.json's truncation as written
        elif spec.max_length:
            self.backend.enable_truncation(spec.max_length)
        else:
            self.backend.no_truncation()
        self.specials = spec.kind == "transformer"
        self.cache = (WordCache.for_tokenizer(self.backend, self.specials)
                      if spec.word_cache else None)

    def __call__(self, texts: list[str], prompt: str = "") -> tuple[np.ndarray, np.ndarray]:
        flats, lengths = [], []
        for start in range(0, len(texts), TOKENIZE_CHUNK):
            chunk = [prompt + t for t in texts[start:start + TOKENIZE_CHUNK]]
            flat, length = self.cache(chunk) if self.cache else self._full(chunk)
            flats.append(flat)
            lengths.append(length)
        if not flats:
            return np.zeros(0, np.int32), np.zeros(0, np.int32)
        return np.concatenate(flats), np.concatenate(lengths)

    def _full(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ids = [e.ids for e in self.backend.encode_batch_fast(
            texts, add_special_tokens=self.specials)]
        lengths = np.fromiter(map(len, ids), np.int32, len(ids))
        return np.fromiter((i for row in ids for i in row), np.int32, int(lengths.sum())), lengths


def default_batch_tokens(device: str) -> int:
    """Padded tokens per model call when ``embed.batch_tokens`` is null. On a CPU, small
    batches keep each layer's activations and attention scores in cache: all-MiniLM-L6-v2 on
    1,000 SciFact documents, 2 threads, took 21.8 s at 2048 against 30.3 s at 16384 and 27.9 s
    for ``SentenceTransformer.encode`` at batch 64. A GPU wants large batches."""
    return 65536 if str(device).startswith("cuda") else 2048


def token_batches(lengths: np.ndarray, batch_tokens: int) -> list[np.ndarray]:
    """Indices of the texts, longest first, cut so that each batch pads to at most
    ``batch_tokens`` tokens (a text longer than the budget gets a batch of its own)."""
    order = np.argsort(-lengths, kind="stable")
    batches, start = [], 0
    while start < len(order):
        longest = max(int(lengths[order[start]]), 1)
        size = max(1, batch_tokens // longest)
        batches.append(order[start:start + size])
        start += size
    return batches


def encode_tokens(model, spec: TokenizerSpec, flat: np.ndarray, lengths: np.ndarray,
                  batch_tokens: int) -> np.ndarray:
    """L2-normalised float32 vectors of pre-tokenised texts, in their input order."""
    import torch
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    if spec.kind == "static":
        return _encode_static(model, flat, starts, lengths, batch_tokens)
    device = model.device
    cuda = device.type == "cuda"
    out = None
    with torch.inference_mode():
        for batch in token_batches(lengths, batch_tokens):
            features = _features(flat, starts, lengths, batch)
            if cuda:
                features = {k: v.pin_memory().to(device, non_blocking=True)
                            for k, v in features.items()}
            vectors = model.forward(features)["sentence_embedding"]
            vectors = torch.nn.functional.normalize(vectors.float(), dim=-1)
            if out is None:
                out = torch.empty((len(lengths), vectors.shape[1]), dtype=torch.float32,
                                  device=device)
            out[torch.as_tensor(batch, device=device)] = vectors
    if out is None:
        return np.zeros((0, model.get_sentence_embedding_dimension() or 0), np.float32)
    return out.cpu().numpy()       # one device-to-host copy per call


def _encode_static(model, flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                   batch_tokens: int) -> np.ndarray:
    """A bag of embeddings pads nothing: runs of texts in input order, no sort, each run one
    ``EmbeddingBag`` call over a slice of ``flat`` (16 x the budget: the call is cheap)."""
    import torch
    out = []
    ends = starts + lengths
    budget = 16 * batch_tokens
    with torch.inference_mode():
        a = 0
        while a < len(lengths):
            b = max(a + 1, int(np.searchsorted(ends, starts[a] + budget, side="right")))
            features = {"input_ids": torch.from_numpy(
                            flat[starts[a]:ends[b - 1]].astype(np.int64)).to(model.device),
                        "offsets": torch.from_numpy(starts[a:b] - starts[a]).to(model.device)}
            vectors = model.forward(features)["sentence_embedding"]
            out.append(torch.nn.functional.normalize(vectors.float(), dim=-1).cpu().numpy())
            a = b
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def _features(flat: np.ndarray, starts: np.ndarray, lengths: np.ndarray, batch: np.ndarray
              ) -> dict:
    """Padded ``input_ids``/``attention_mask``/``token_type_ids`` of one Transformer batch."""
    import torch
    width = int(lengths[batch].max())
    ids = np.zeros((len(batch), width), np.int64)
    mask = np.zeros((len(batch), width), np.int64)
    for row, i in enumerate(batch):
        n = lengths[i]
        ids[row, :n] = flat[starts[i]:starts[i] + n]
        mask[row, :n] = 1
    return {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask),
            "token_type_ids": torch.zeros_like(torch.from_numpy(ids))}
