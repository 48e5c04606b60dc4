"""faiss indexes over compressed codes, and search with rescoring.

``build_index`` streams the parts of a codes folder (``smec compress``) into one faiss index:

| precision | flat | hnsw |
|---|---|---|
| float32 | ``IndexFlatIP`` | ``IndexHNSWFlat`` (inner product) |
| float16 | ``IndexScalarQuantizer`` fp16 (inner product) | ``IndexHNSWSQ`` fp16 |
| int8 | ``IndexScalarQuantizer`` 8-bit with the stored calibration | ``IndexHNSWSQ`` 8-bit |
| binary | ``IndexBinaryFlat`` (Hamming) | ``IndexBinaryHNSW`` |

An int8 code ``c`` of smec's quantiser decodes to ``lo + (c + 128)/255 · (hi − lo)``; faiss's
8-bit scalar quantiser with ``vmin = lo, vdiff = hi − lo`` stores the same byte ``c + 128`` and
decodes it half a step higher in every dimension, which adds one constant to every inner
product with a query and so changes no ranking. The index folder holds ``index.faiss``, the id
map ``ids.txt``, ``codes.npy`` (the codes again, memory-mapped at search time, for rescoring
without float documents), ``quantizer.npz`` and ``manifest.json``; it is written atomically.

:class:`Searcher` takes ``R·k`` candidates from the index and, with ``rescore > 1`` (or
always, for binary), re-ranks them by the float query against the dequantised codes.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from smec.codes import (
    QUANTIZER,
    code_parts,
    codes_meta,
    iter_codes,
    load_codes_quantizer,
)
from smec.errors import SmecError
from smec.io import atomic_dir
from smec.quantize import Quantizer

INDEX_FILE = "index.faiss"
IDS_FILE = "ids.txt"
CODES_FILE = "codes.npy"
MANIFEST_FILE = "manifest.json"
KINDS = ("flat", "hnsw")


def _new_index(precision: str, dim: int, kind: str, hnsw_m: int, quantizer: Quantizer):
    import faiss
    ip = faiss.METRIC_INNER_PRODUCT
    if precision == "binary":
        return faiss.IndexBinaryFlat(dim) if kind == "flat" else faiss.IndexBinaryHNSW(dim, hnsw_m)
    if precision == "float32":
        return faiss.IndexFlatIP(dim) if kind == "flat" else faiss.IndexHNSWFlat(dim, hnsw_m, ip)
    qtype = faiss.ScalarQuantizer.QT_fp16 if precision == "float16" else \
        faiss.ScalarQuantizer.QT_8bit
    index = faiss.IndexScalarQuantizer(dim, qtype, ip) if kind == "flat" else \
        faiss.IndexHNSWSQ(dim, qtype, hnsw_m, ip)
    sq = index.sq if kind == "flat" else faiss.downcast_index(index.storage).sq
    if precision == "int8":    # smec's calibration, not faiss's own training
        lo, hi = quantizer.params["lo"], quantizer.params["hi"]
        faiss.copy_array_to_vector(np.concatenate([lo, hi - lo]).astype(np.float32), sq.trained)
    index.is_trained = True
    if kind == "hnsw":
        faiss.downcast_index(index.storage).is_trained = True
    return index


def _addable(codes: np.ndarray, precision: str, quantizer: Quantizer) -> np.ndarray:
    """What faiss's ``add`` takes for these codes (it re-encodes floats to the same bytes)."""
    if precision == "binary":
        return np.ascontiguousarray(codes)
    if precision == "int8":   # a quarter step up, so faiss's floor lands on the same byte
        step = (quantizer.params["hi"] - quantizer.params["lo"]) / 255
        return np.ascontiguousarray(quantizer.decode(codes) + step / 4, dtype=np.float32)
    return np.ascontiguousarray(codes, dtype=np.float32)


def build_index(codes_dir: Path, out: Path, kind: str = "flat", hnsw_m: int = 32,
                encoder: Path | None = None) -> dict:
    """Build the index folder ``out`` from the codes folder ``codes_dir``; its manifest."""
    import faiss
    import pyarrow.parquet as pq
    if kind not in KINDS:
        raise SmecError(f"--kind {kind}: choose one of {', '.join(KINDS)}")
    codes_dir, out = Path(codes_dir), Path(out)
    meta = codes_meta(codes_dir)
    precision, dim = meta["precision"], int(meta["dim"])
    quantizer = load_codes_quantizer(codes_dir)
    index = _new_index(precision, dim, kind, hnsw_m, quantizer)
    count = 0
    with atomic_dir(out) as tmp:
        width = (dim + 7) // 8 if precision == "binary" else dim
        dtype = {"binary": np.uint8, "int8": np.int8, "float16": np.float16,
                 "float32": np.float32}[precision]
        rows = sum(pq.ParquetFile(p).metadata.num_rows for p in code_parts(codes_dir))
        stored = np.lib.format.open_memmap(tmp / CODES_FILE, mode="w+", dtype=dtype,
                                           shape=(rows, width))
        with (tmp / IDS_FILE).open("w", encoding="utf-8") as ids_file:
            for ids, codes in iter_codes(codes_dir):   # one part in memory at a time
                index.add(_addable(codes, precision, quantizer))
                stored[count:count + len(ids)] = codes
                ids_file.writelines(f"{i}\n" for i in ids)
                count += len(ids)
        stored.flush()
        del stored
        if precision == "binary":
            faiss.write_index_binary(index, str(tmp / INDEX_FILE))
        else:
            faiss.write_index(index, str(tmp / INDEX_FILE))
        if (codes_dir / QUANTIZER).is_file():
            shutil.copyfile(codes_dir / QUANTIZER, tmp / QUANTIZER)
        manifest = {"kind": kind, "hnsw_m": hnsw_m if kind == "hnsw" else None,
                    "precision": precision, "dim": dim, "count": count,
                    "compressor": meta["compressor"], "compressor_path": meta["compressor_path"],
                    "compressor_kind": meta.get("compressor_kind"), "models": meta["models"],
                    "codes": str(codes_dir.resolve()),
                    "encoder": str(Path(encoder).resolve()) if encoder else None,
                    "index_bytes": (tmp / INDEX_FILE).stat().st_size}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


class QueryEncoder:
    """Text -> the float query vectors an index's codes were made from: an exported
    sentence-transformers folder, or the base model(s) + the compressor."""

    def __init__(self, manifest: dict, encoder: Path | None = None) -> None:
        self.dim = int(manifest["dim"])
        self.model = None
        if encoder is not None:
            info_path = Path(encoder) / "smec_export.json"
            if not info_path.is_file():
                raise SmecError(f"--encoder {encoder}: not a folder `smec export` wrote "
                                "(no smec_export.json)")
            info = json.loads(info_path.read_text())
            if info["compressor"] != manifest["compressor"]:
                raise SmecError(f"--encoder {encoder}: exported from another compressor "
                                f"({info['compressor_path']}) than the index's "
                                f"({manifest['compressor_path']})")
            if int(info["dim"]) != self.dim:
                raise SmecError(f"--encoder {encoder}: {info['dim']}-d vectors, the index holds "
                                f"{self.dim}-d codes")
            from sentence_transformers import SentenceTransformer
            self.model = SentenceTransformer(str(encoder), device="cpu", local_files_only=True,
                                             trust_remote_code=not info["builtin_only"])
        else:
            from smec.codes import compressor_fingerprint
            from smec.compressors.base import load_compressor
            path = Path(manifest["compressor_path"])
            if not (path / "compressor.json").is_file():
                raise SmecError(f"{path}: the index's compressor is gone; pass --encoder "
                                "(the folder `smec export` wrote)")
            if compressor_fingerprint(path) != manifest["compressor"]:
                raise SmecError(f"{path}: changed since the index was built; rebuild the codes "
                                "and the index, or pass --encoder")
            self.compressor = load_compressor(path)
            self.models = manifest["models"]

    def encode(self, texts: list[str]) -> np.ndarray:
        if self.model is not None:
            return np.asarray(self.model.encode(texts, prompt_name="query",
                                                convert_to_numpy=True), np.float32)
        from smec.compressors.concat import ConcatCompressor
        from smec.encoders import encode, load_model, resolve_model
        if not hasattr(self, "_bases"):
            self._bases = [load_model(resolve_model(m["name"])) for m in self.models]
        columns = {m["name"]: encode(base, texts, m.get("query_prompt", ""))
                   for m, base in zip(self.models, self._bases)}
        vectors = self.compressor.concatenate(columns) \
            if isinstance(self.compressor, ConcatCompressor) else columns[self.models[0]["name"]]
        return self.compressor.encode(vectors, self.dim)


class Searcher:
    """Search an index folder: ``search(texts, k, rescore)`` -> per query [(doc id, score)]."""

    def __init__(self, index_dir: Path | str, encoder: Path | str | None = None) -> None:
        import faiss
        self.dir = Path(index_dir)
        path = self.dir / MANIFEST_FILE
        if not path.is_file() or not (self.dir / INDEX_FILE).is_file():
            raise SmecError(f"{self.dir}: no index (manifest.json, index.faiss); build it with "
                            "`smec index --codes CODES --out DIR`")
        self.manifest = json.loads(path.read_text())
        if self.manifest["count"] == 0:
            raise SmecError(f"{self.dir}: the index is empty")
        self.precision, self.dim = self.manifest["precision"], int(self.manifest["dim"])
        read = faiss.read_index_binary if self.precision == "binary" else faiss.read_index
        self.index = read(str(self.dir / INDEX_FILE))
        self.ids = (self.dir / IDS_FILE).read_text(encoding="utf-8").splitlines()
        self.codes = np.load(self.dir / CODES_FILE, mmap_mode="r")
        self.quantizer = Quantizer.load(self.dir / QUANTIZER) \
            if (self.dir / QUANTIZER).is_file() else \
            Quantizer.uncalibrated(self.precision, self.dim)
        given = Path(encoder) if encoder else (Path(self.manifest["encoder"])
                                              if self.manifest.get("encoder") else None)
        self.encoder = QueryEncoder(self.manifest, given)
        if self.manifest["kind"] == "hnsw":
            hnsw = self.index.hnsw
            hnsw.efSearch = max(hnsw.efSearch, 64)

    def search_vectors(self, queries: np.ndarray, k: int = 10, rescore: int = 1
                       ) -> list[list[tuple[str, float]]]:
        """Float query vectors ``[n, dim]`` (the compressed level, L2-normalised) -> top k."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise SmecError(f"queries of shape {queries.shape}; the index holds {self.dim}-d "
                            "codes")
        if k < 1 or rescore < 1:
            raise SmecError(f"-k {k} --rescore {rescore}: both must be >= 1")
        first = min(len(self.ids), k * rescore)
        probe = self.quantizer.encode(queries) if self.precision == "binary" else queries
        _, cand = self.index.search(np.ascontiguousarray(probe), first)
        results = []
        for row, query in zip(cand, queries):
            rows = np.sort(row[row >= 0])      # sorted: cheap reads of the memory-mapped codes
            scores = self.quantizer.decode(np.asarray(self.codes[rows])) @ query
            best = np.argsort(-scores, kind="stable")[:k]
            results.append([(self.ids[rows[i]], float(scores[i])) for i in best])
        return results

    def search(self, texts: list[str], k: int = 10, rescore: int = 1
               ) -> list[list[tuple[str, float]]]:
        return self.search_vectors(self.encoder.encode(texts), k, rescore)
