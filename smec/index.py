"""faiss indexes over compressed codes, and search with rescoring.

``build_index`` streams the parts of a codes folder (``smec compress``) into one faiss index:

| precision | flat | hnsw |
|---|---|---|
| float32 | ``IndexFlatIP`` | ``IndexHNSWFlat`` (inner product) |
| float16 | ``IndexScalarQuantizer`` fp16 (inner product) | ``IndexHNSWSQ`` fp16 |
| int8 | ``IndexScalarQuantizer`` 8-bit with the stored calibration | ``IndexHNSWSQ`` 8-bit |
| binary | ``IndexBinaryFlat`` (Hamming) | ``IndexBinaryHNSW`` |
| pqM / opqM | ``IndexPQ`` (asymmetric, inner product; OPQ: in an ``IndexPreTransform``) | – |
| pqMx4 / opqMx4 | ``IndexPQFastScan`` (the same, 4-bit codes scanned from SIMD registers) | – |

``kind="ivf"`` (an inverted file, for corpora a flat scan cannot serve: it scans ``nprobe`` of
``nlist`` lists) builds ``IndexIVFFlat`` / ``IndexIVFScalarQuantizer`` (fp16, or 8-bit with
smec's calibration, not residual) / ``IndexIVFPQ`` (smec's codebooks, not residual) /
``IndexBinaryIVF`` (``IndexIVFPQFastScan`` for 4-bit PQ); the coarse k-means is trained on a
sample of the codes, decoded.

An int8 code ``c`` of smec's quantiser decodes to ``lo + (c + 128)/255 · (hi − lo)``; faiss's
8-bit scalar quantiser with ``vmin = lo, vdiff = hi − lo`` stores the same byte ``c + 128`` and
decodes it half a step higher in every dimension, which adds one constant to every inner
product with a query and so changes no ranking. PQ codes enter ``IndexPQ`` as they are
(``add_sa_codes``) with smec's codebooks, so the index scores what the evaluation scores; the
fast scan of 4-bit codes rounds its lookup tables to 8 bits, so its first pass approximates
those scores, and the candidates it returns are re-scored exactly (below). The
index folder holds ``index.faiss``, the id
map ``ids.txt``, ``codes.npy`` (the codes again, or int8 codes of the same level from a second
codes folder, memory-mapped at search time, for rescoring without float documents) with their
quantiser ``codes_quantizer.npz``, ``quantizer.npz`` and ``manifest.json``; it is written
atomically.

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
from smec.quantize import Quantizer, code_layout
from smec.results import is_binary

INDEX_FILE = "index.faiss"
IDS_FILE = "ids.txt"
CODES_FILE = "codes.npy"
RESCORE_QUANTIZER = "codes_quantizer.npz"
MANIFEST_FILE = "manifest.json"
KINDS = ("flat", "hnsw", "ivf")
IVF_SAMPLE_PER_LIST = 64     # coarse k-means training rows per list (faiss warns below 39)


def _product_index(quantizer: Quantizer, kind: str, nlist: int = 0,
                   sample: np.ndarray | None = None):
    """An empty ``IndexPQ`` (flat) or trained ``IndexIVFPQ`` (not residual) with smec's
    codebooks — their fast-scan versions for 4-bit codes — in the OPQ-rotated space when there
    is a rotation (:func:`_rotated` wraps it once the codes are in)."""
    import faiss
    books = quantizer.params["codebooks"]
    dim, m, ip = quantizer.dim, len(books), faiss.METRIC_INNER_PRODUCT
    fast_scan = quantizer.nibbles     # 4-bit codes: faiss's SIMD fast scan
    if kind == "flat":
        index = faiss.IndexPQFastScan(dim, m, 4, ip) if fast_scan else \
            faiss.IndexPQ(dim, m, 8, ip)
    else:
        index = (faiss.IndexIVFPQFastScan if fast_scan else faiss.IndexIVFPQ)(
            faiss.IndexFlatIP(dim), dim, nlist, m, 4 if fast_scan else 8, ip)
        index.by_residual = False        # the codes of the vector itself: smec's codes
        index.train(_codewords(quantizer, sample))
    faiss.copy_array_to_vector(np.ascontiguousarray(books, np.float32).ravel(),
                               index.pq.centroids)
    index.is_trained = True
    return index


def _codewords(quantizer: Quantizer, codes: np.ndarray) -> np.ndarray:
    """PQ codes as the concatenated codewords, in the rotated space (before OPQ's ``R^T``)."""
    x = quantizer.decode(codes)
    if "rotation" in quantizer.params:
        x = x @ quantizer.params["rotation"].T
    return np.ascontiguousarray(x, np.float32)


def _rotated(index, quantizer: Quantizer):
    """``index`` behind OPQ's rotation (an ``IndexPreTransform``); itself without one."""
    import faiss
    if "rotation" not in quantizer.params:
        return index
    rotation = faiss.LinearTransform(quantizer.dim, quantizer.dim, False)
    faiss.copy_array_to_vector(quantizer.params["rotation"].astype(np.float32).ravel(),
                               rotation.A)
    rotation.is_trained = True
    return faiss.IndexPreTransform(rotation, index)


def default_nlist(rows: int) -> int:
    """faiss's rule of thumb: about 4·√n lists."""
    return max(1, int(4 * rows ** 0.5))


def _ivf_index(precision: str, dim: int, nlist: int, quantizer: Quantizer, sample: np.ndarray):
    """An empty, trained IVF index whose lists hold exactly the codes smec wrote."""
    import faiss
    ip = faiss.METRIC_INNER_PRODUCT
    if is_binary(precision):
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(dim), dim, nlist)
        index.train(np.ascontiguousarray(sample))
        return index
    if quantizer.asymmetric:
        return _product_index(quantizer, "ivf", nlist, sample)
    vectors = np.ascontiguousarray(quantizer.decode(sample), dtype=np.float32)
    coarse = faiss.IndexFlatIP(dim)
    if precision == "float32":
        index = faiss.IndexIVFFlat(coarse, dim, nlist, ip)
        index.train(vectors)
        return index
    qtype = faiss.ScalarQuantizer.QT_fp16 if precision == "float16" else \
        faiss.ScalarQuantizer.QT_8bit
    index = faiss.IndexIVFScalarQuantizer(coarse, dim, nlist, qtype, ip, False)
    index.train(vectors)
    if precision == "int8":     # smec's calibration, as in the flat index
        lo, hi = quantizer.params["lo"], quantizer.params["hi"]
        faiss.copy_array_to_vector(np.concatenate([lo, hi - lo]).astype(np.float32),
                                   index.sq.trained)
    return index


def _ivf_sample(codes_dir: Path, rows: int, nlist: int, seed: int = 0) -> np.ndarray:
    """About ``IVF_SAMPLE_PER_LIST · nlist`` codes drawn evenly from every part."""
    want = min(rows, IVF_SAMPLE_PER_LIST * nlist)
    rng = np.random.default_rng(seed)
    kept = []
    for _, codes in iter_codes(codes_dir):
        take = min(len(codes), int(np.ceil(want * len(codes) / rows)))
        kept.append(codes[np.sort(rng.choice(len(codes), take, replace=False))])
    return np.concatenate(kept)


def _new_index(precision: str, dim: int, kind: str, hnsw_m: int, quantizer: Quantizer):
    import faiss
    ip = faiss.METRIC_INNER_PRODUCT
    if quantizer.asymmetric:
        if kind != "flat":
            raise SmecError(f"--kind {kind}: {precision} codes are searched with --kind flat "
                            "(IndexPQ) or --kind ivf (IndexIVFPQ)")
        return _product_index(quantizer, kind)
    if is_binary(precision):
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
    if is_binary(precision):
        return np.ascontiguousarray(codes)
    if precision == "int8":   # a quarter step up, so faiss's floor lands on the same byte
        step = (quantizer.params["hi"] - quantizer.params["lo"]) / 255
        return np.ascontiguousarray(quantizer.decode(codes) + step / 4, dtype=np.float32)
    return np.ascontiguousarray(codes, dtype=np.float32)


def _check_rescore_codes(meta: dict, rescore_dir: Path, rescore: dict) -> None:
    if rescore["compressor"] != meta["compressor"] or int(rescore["dim"]) != int(meta["dim"]):
        raise SmecError(f"--rescore-codes {rescore_dir}: codes of another compressor or level "
                        f"({rescore['compressor_path']}, {rescore['dim']} d) than the index's "
                        f"({meta['compressor_path']}, {meta['dim']} d)")


def build_index(codes_dir: Path, out: Path, kind: str = "flat", hnsw_m: int = 32,
                encoder: Path | None = None, rescore_codes: Path | None = None,
                nlist: int | None = None) -> dict:
    """Build the index folder ``out`` from the codes folder ``codes_dir``; its manifest.

    ``kind="ivf"``: ``nlist`` inverted lists (default about 4·√n), the coarse quantiser
    trained on a sample of the codes; search scans ``nprobe`` of them.

    ``rescore_codes``: another codes folder of the same compressor and level (say int8 beside
    a binary index) whose codes, not the index's, are kept for rescoring: the index stays
    small in memory, the rescoring codes are read from disk for R·k candidates only."""
    import faiss
    import pyarrow.parquet as pq
    if kind not in KINDS:
        raise SmecError(f"--kind {kind}: choose one of {', '.join(KINDS)}")
    codes_dir, out = Path(codes_dir), Path(out)
    meta = codes_meta(codes_dir)
    precision, dim = meta["precision"], int(meta["dim"])
    quantizer = load_codes_quantizer(codes_dir)
    rows = sum(pq.ParquetFile(p).metadata.num_rows for p in code_parts(codes_dir))
    if kind == "ivf":
        nlist = nlist or default_nlist(rows)
        if nlist < 1 or nlist > rows:
            raise SmecError(f"--nlist {nlist}: choose between 1 and the {rows} codes")
        index = _ivf_index(precision, dim, nlist, quantizer, _ivf_sample(codes_dir, rows, nlist))
    else:
        index = _new_index(precision, dim, kind, hnsw_m, quantizer)
    rescore_dir = Path(rescore_codes) if rescore_codes else codes_dir
    rescore_meta = codes_meta(rescore_dir)
    _check_rescore_codes(meta, rescore_dir, rescore_meta)
    rescore_precision = rescore_meta["precision"]
    count = 0
    with atomic_dir(out) as tmp:
        dtype, width, _ = code_layout(rescore_precision, dim)
        stored = np.lib.format.open_memmap(tmp / CODES_FILE, mode="w+", dtype=dtype,
                                           shape=(rows, width))
        pairs = zip(iter_codes(codes_dir), iter_codes(rescore_dir)) if rescore_codes else \
            ((part, part) for part in iter_codes(codes_dir))
        with (tmp / IDS_FILE).open("w", encoding="utf-8") as ids_file:
            for (ids, codes), (rescore_ids, kept) in pairs:   # a part in memory at a time
                if rescore_ids != ids:
                    raise SmecError(f"--rescore-codes {rescore_dir}: its ids differ from those "
                                    f"of {codes_dir} (compress the same store to both)")
                if quantizer.asymmetric and kind == "flat" and not quantizer.nibbles:
                    index.add_sa_codes(np.ascontiguousarray(codes))
                elif quantizer.asymmetric:   # the codewords re-encode to the same codes
                    index.add(_codewords(quantizer, codes))
                else:
                    index.add(_addable(codes, precision, quantizer))
                stored[count:count + len(ids)] = kept
                ids_file.writelines(f"{i}\n" for i in ids)
                count += len(ids)
        stored.flush()
        del stored
        if count != rows:
            raise SmecError(f"--rescore-codes {rescore_dir}: fewer rows than {codes_dir}")
        if is_binary(precision):
            faiss.write_index_binary(index, str(tmp / INDEX_FILE))
        else:
            faiss.write_index(_rotated(index, quantizer) if quantizer.asymmetric else index,
                              str(tmp / INDEX_FILE))
        if (codes_dir / QUANTIZER).is_file():
            shutil.copyfile(codes_dir / QUANTIZER, tmp / QUANTIZER)
        load_codes_quantizer(rescore_dir).save(tmp / RESCORE_QUANTIZER)
        manifest = {"kind": kind, "hnsw_m": hnsw_m if kind == "hnsw" else None,
                    "nlist": nlist if kind == "ivf" else None,
                    "precision": precision, "dim": dim, "count": count,
                    "rescore_precision": rescore_precision,
                    "compressor": meta["compressor"], "compressor_path": meta["compressor_path"],
                    "compressor_kind": meta.get("compressor_kind"), "models": meta["models"],
                    "codes": str(codes_dir.resolve()), "rescore_codes": str(rescore_dir.resolve()),
                    "encoder": str(Path(encoder).resolve()) if encoder else None,
                    "index_bytes": (tmp / INDEX_FILE).stat().st_size,
                    "rescore_bytes": (tmp / CODES_FILE).stat().st_size}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


class QueryEncoder:
    """Text -> the float query vectors an index's codes were made from: an exported
    sentence-transformers folder, or the base model(s) + the compressor. Checked when made,
    loaded on the first ``encode``."""

    def __init__(self, manifest: dict, encoder: Path | None = None) -> None:
        self.manifest, self.dim, self.path = manifest, int(manifest["dim"]), encoder
        self._encode = None
        if encoder is None:
            return
        info_path = Path(encoder) / "smec_export.json"
        if not info_path.is_file():
            raise SmecError(f"--encoder {encoder}: not a folder `smec export` wrote "
                            "(no smec_export.json)")
        self.info = json.loads(info_path.read_text())
        if self.info["compressor"] != manifest["compressor"]:
            raise SmecError(f"--encoder {encoder}: exported from another compressor "
                            f"({self.info['compressor_path']}) than the index's "
                            f"({manifest['compressor_path']})")
        if int(self.info["dim"]) != self.dim:
            raise SmecError(f"--encoder {encoder}: {self.info['dim']}-d vectors, the index "
                            f"holds {self.dim}-d codes")

    def _exported(self):
        from sentence_transformers import SentenceTransformer
        model = SentenceTransformer(str(self.path), device="cpu", local_files_only=True,
                                    trust_remote_code=not self.info["builtin_only"])
        return lambda texts: np.asarray(model.encode(texts, prompt_name="query",
                                                     convert_to_numpy=True), np.float32)

    def _pipeline(self):
        from smec.codes import compressor_fingerprint
        from smec.compressors.base import load_compressor
        from smec.compressors.concatenation import ConcatCompressor
        from smec.encoders import encode, load_model, resolve_model
        path = Path(self.manifest["compressor_path"])
        if not (path / "compressor.json").is_file():
            raise SmecError(f"{path}: the index's compressor is gone; pass --encoder (the "
                            "folder `smec export` wrote)")
        if compressor_fingerprint(path) != self.manifest["compressor"]:
            raise SmecError(f"{path}: changed since the index was built; rebuild the codes "
                            "and the index, or pass --encoder")
        compressor, models = load_compressor(path), self.manifest["models"]
        bases = [load_model(resolve_model(m["name"])) for m in models]

        def run(texts: list[str]) -> np.ndarray:
            columns = {m["name"]: encode(base, texts, m.get("query_prompt", ""))
                       for m, base in zip(models, bases)}
            vectors = compressor.concatenate(columns) \
                if isinstance(compressor, ConcatCompressor) else columns[models[0]["name"]]
            return compressor.encode(vectors, self.dim)
        return run

    def encode(self, texts: list[str]) -> np.ndarray:
        if self._encode is None:
            self._encode = self._exported() if self.path is not None else self._pipeline()
        return self._encode(texts)


class Searcher:
    """Search an index folder: ``search(texts, k, rescore)`` -> per query [(doc id, score)]."""

    def __init__(self, index_dir: Path | str, encoder: Path | str | None = None,
                 ef_search: int = 64, nprobe: int = 16) -> None:
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
        read = faiss.read_index_binary if is_binary(self.precision) else faiss.read_index
        self.index = read(str(self.dir / INDEX_FILE))
        self.ids = (self.dir / IDS_FILE).read_text(encoding="utf-8").splitlines()
        self.codes = np.load(self.dir / CODES_FILE, mmap_mode="r")
        self.rescorer = Quantizer.load(self.dir / RESCORE_QUANTIZER)
        self.quantizer = Quantizer.load(self.dir / QUANTIZER) \
            if (self.dir / QUANTIZER).is_file() else \
            Quantizer.uncalibrated(self.precision, self.dim)
        recorded = self.manifest.get("encoder")
        self.encoder = QueryEncoder(self.manifest, Path(encoder) if encoder else
                                    Path(recorded) if recorded else None)
        if self.manifest["kind"] == "hnsw":
            self.index.hnsw.efSearch = ef_search    # HNSW: candidates kept while searching
        elif self.manifest["kind"] == "ivf":        # IVF: lists scanned per query
            ivf = self.index if is_binary(self.precision) else faiss.extract_index_ivf(
                self.index)
            ivf.nprobe = min(nprobe, int(self.manifest["nlist"]))
        elif not self.quantizer.asymmetric and not is_binary(self.precision) \
                and hasattr(faiss, "StandardGpuResources") \
                and faiss.get_num_gpus() > 0:    # the `gpu` extra and a GPU: flat on the GPU
            self._gpu = faiss.StandardGpuResources()
            self.index = faiss.index_cpu_to_gpu(self._gpu, 0, self.index)

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
        probe = self.quantizer.encode(queries) if is_binary(self.precision) else queries
        _, cand = self.index.search(np.ascontiguousarray(probe), first)
        results = []
        for row, query in zip(cand, queries):
            rows = np.sort(row[row >= 0])      # sorted: cheap reads of the memory-mapped codes
            scores = self.rescorer.decode(np.asarray(self.codes[rows])) @ query
            best = np.argsort(-scores, kind="stable")[:k]
            results.append([(self.ids[rows[i]], float(scores[i])) for i in best])
        return results

    def search(self, texts: list[str], k: int = 10, rescore: int = 1
               ) -> list[list[tuple[str, float]]]:
        return self.search_vectors(self.encoder.encode(texts), k, rescore)
