"""``smec export``: base model + one compressor level as a sentence-transformers folder.

The folder holds the base model's modules, a ``Normalize`` (the pipeline embeds with
``normalize_embeddings=True``), then the level:

* linear levels (PCA, truncation, or any compressor whose level is ``normalize(Wx + b)``):
  a built-in ``Dense`` (identity activation) and ``Normalize``; no custom code, and embedding
  servers that read ``Dense`` layers can serve it;
* any other level: ``smec_compressor.SmecCompressor`` (:mod:`smec.st_module`, copied into the
  folder), running the level as a ``torch.export`` program; load it with
  ``trust_remote_code=True``.

``prompts`` hold the base model's query and document prompts, so
``model.encode(texts, prompt_name="query")`` returns the vectors the pipeline scores.
``smec_export.json`` records what made the folder; for int8/binary the quantiser the corpus
codes were made with travels as ``quantizer.npz``: :func:`quantize_queries` applies it.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from smec.codes import (
    codes_meta,
    compressor_fingerprint,
    compressor_models,
    load_codes_quantizer,
)
from smec.compressors.base import Compressor, load_compressor
from smec.compressors.concatenation import ConcatCompressor
from smec.errors import SmecError
from smec.io import atomic_dir
from smec.quantize import Quantizer
from smec.runfolder import RunFolder

EXPORT_INFO = "smec_export.json"
QUANTIZER = "quantizer.npz"
MODULE_FILE = "smec_compressor.py"
MODULE_NAME = "smec_compressor"


def _quantizer(compressor: Compressor, dim: int, precision: str, codes: Path | None
               ) -> Quantizer | None:
    if codes is not None:
        return load_codes_quantizer(codes)
    if precision in ("float32", "float16"):
        return None
    if (dim, precision) in compressor.quantizers:
        return compressor.quantizers[(dim, precision)]
    if precision == "binary":
        return Quantizer.uncalibrated("binary", dim)
    raise SmecError(f"--precision {precision}: the compressor holds no {precision} calibration "
                    f"of level {dim}; pass --codes, the folder `smec compress` wrote, so "
                    "queries are quantised like the corpus")


def _check_codes(codes: Path, fingerprint: str, dim: int | None, precision: str
                 ) -> tuple[int, str]:
    meta = codes_meta(codes)
    if meta["compressor"] != fingerprint:
        raise SmecError(f"--codes {codes}: made by another compressor "
                        f"({meta['compressor_path']}); export that one")
    if dim is not None and dim != meta["dim"]:
        raise SmecError(f"--dims {dim}: the codes in {codes} are of level {meta['dim']}")
    if precision not in ("float32", meta["precision"]):
        raise SmecError(f"--precision {precision}: the codes in {codes} are "
                        f"{meta['precision']}")
    return int(meta["dim"]), meta["precision"]


def _holdout_ndcg(run_dir: Path, method: str, dim: int) -> float | None:
    """The level's hold-out nDCG@10 from the run's results.json, where it was measured."""
    path = RunFolder(run_dir).results
    if not path.is_file():
        return None
    for row in json.loads(path.read_text()).get("rows", []):
        if row.get("split") == "holdout" and row.get("method") == method \
                and row.get("dims") == dim and row.get("precision", "float32") == "float32":
            return row.get("ndcg_at_10")
    return None


def _level_modules(compressor: Compressor, dim: int) -> tuple[list[torch.nn.Module], bool]:
    """The modules after the base model's ``Normalize``; whether they are all built-in."""
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    from smec.st_module import SmecCompressor
    affine = compressor.affine(dim)
    if affine is not None:
        weight, bias = affine
        dense = Dense(compressor.input_dim, dim, bias=True,
                      activation_function=torch.nn.Identity())
        with torch.no_grad():
            dense.linear.weight.copy_(torch.from_numpy(np.asarray(weight, np.float32)))
            dense.linear.bias.copy_(torch.from_numpy(np.asarray(bias, np.float32)))
        return [dense, Normalize()], True
    level = compressor.torch_level(dim).cpu().eval()
    return [SmecCompressor(compressor.input_dim, dim, level)], False


def _concat_input(compressor: ConcatCompressor, models: list[dict]
                  ) -> tuple[list[torch.nn.Module], dict[str, str]]:
    """The input module that runs every base model of a concat compressor, in its order."""
    from smec.encoders import load_model, resolve_model
    from smec.st_module import SmecConcat
    by_name = {m["name"]: m for m in models}
    ordered = [by_name.get(m["name"], {"name": m["name"]}) for m in compressor.models]
    concat = SmecConcat(
        [m["name"] for m in ordered],
        {task: [m.get(f"{task}_prompt", "") for m in ordered] for task in ("query", "document")},
        [load_model(resolve_model(m["name"])) for m in ordered])
    # the prompt *names* reach SmecConcat, which gives each base model its own prompt
    return [concat], {"query": "query", "document": "document"}


def export_model(compressor_dir: Path, out_dir: Path, dim: int | None = None,
                 precision: str = "float32", codes: Path | None = None) -> dict:
    """Write the sentence-transformers folder ``out_dir``; returns what it records."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize

    from smec.encoders import load_model, resolve_model
    compressor_dir, out_dir = Path(compressor_dir), Path(out_dir)
    compressor = load_compressor(compressor_dir)
    fingerprint = compressor_fingerprint(compressor_dir)
    if codes is not None:
        dim, precision = _check_codes(codes, fingerprint, dim, precision)
    dim = min(compressor.dims) if dim is None else dim
    if dim not in compressor.dims:
        raise SmecError(f"--dims {dim}: {compressor_dir} has no level {dim}; its levels are "
                        f"{compressor.dims}")
    models = compressor_models(compressor_dir)
    if out_dir.resolve() == compressor_dir.resolve():
        raise SmecError(f"{out_dir}: is the compressor folder; export elsewhere")
    quantizer = _quantizer(compressor, dim, precision, codes)
    if isinstance(compressor, ConcatCompressor):
        modules, prompts = _concat_input(compressor, models)   # a custom input module
        level, _ = _level_modules(compressor, dim)
        builtin = False
    else:
        base = models[0]
        modules = list(load_model(resolve_model(base["name"])))
        if not isinstance(modules[-1], Normalize):
            modules.append(Normalize())
        prompts = {"query": base.get("query_prompt", ""),
                   "document": base.get("document_prompt", "")}
        level, builtin = _level_modules(compressor, dim)
    exported = SentenceTransformer(modules=modules + level, device="cpu", prompts=prompts)
    run_dir = compressor_dir.parent
    method = getattr(compressor, "method", compressor.kind)
    info = {"compressor_path": str(compressor_dir.resolve()), "compressor": fingerprint,
            "compressor_kind": method, "dim": dim, "precision": precision,
            "models": [m["name"] for m in models], "base_models": models,
            "holdout_ndcg_at_10": _holdout_ndcg(run_dir, method, dim),
            "codes": str(codes.resolve()) if codes else None, "builtin_only": builtin,
            "quantizer": QUANTIZER if quantizer is not None else None}
    with atomic_dir(out_dir) as tmp:
        exported.save(str(tmp))
        if not builtin:
            shutil.copyfile(Path(__file__).with_name("st_module.py"), tmp / MODULE_FILE)
            entries = json.loads((tmp / "modules.json").read_text())
            for entry in entries:   # the class from the copied file, not from smec
                if entry["type"].startswith("smec."):
                    entry["type"] = f"{MODULE_NAME}.{entry['type'].rsplit('.', 1)[1]}"
            (tmp / "modules.json").write_text(json.dumps(entries, indent=2) + "\n")
        if quantizer is not None:
            quantizer.save(tmp / QUANTIZER)
        (tmp / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return info


def quantize_queries(model_dir: Path | str, vectors: np.ndarray) -> np.ndarray:
    """Quantise query vectors of an exported model exactly as its corpus codes were:
    int8 codes ``[n, dim]``, packed bits ``[n, dim/8]``, float16; float32 unchanged, and
    float32 for PQ codes too (asymmetric distance needs no query codes)."""
    model_dir = Path(model_dir)
    info = json.loads((model_dir / EXPORT_INFO).read_text())
    if info.get("quantizer") is None:
        return np.asarray(vectors, np.float16 if info["precision"] == "float16" else np.float32)
    quantizer = Quantizer.load(model_dir / info["quantizer"])
    if quantizer.asymmetric:   # PQ: the float query meets the decoded codes (faiss's ADC)
        return np.asarray(vectors, np.float32)
    return quantizer.encode(vectors)
