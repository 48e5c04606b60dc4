"""Scalar (int8) and binary quantisation of any compressor's output, with rescoring (METHOD.md §5.3).

* ``int8``: per-dimension ranges ``lo, hi`` calibrated on *corpus* embeddings (never test
  queries); ``code = clip(round((x − lo)/(hi − lo) · 255) − 128, −128, 127)`` and
  ``x̂ = (code + 128)/255 · (hi − lo) + lo``. Ranges come from percentiles (default 0.1/99.9)
  or the min/max (what sentence-transformers' ``quantize_embeddings`` does with
  ``calibration_embeddings``).
* ``float16``: a cast; nothing to calibrate.
* ``binary``: ``bit = x > t`` with ``t = 0`` (sentence-transformers' convention); bits are
  packed with ``np.packbits`` (``d/8`` bytes). The fitted variants place the threshold from
  the calibration vectors: ``binary-median`` at each dimension's median; ``binary-itq`` and
  ``binary-rotated`` centre on the mean ``μ`` and rotate, ``bit = R (x − μ) > 0``, by ITQ's
  rotation (Gong & Lazebnik, 2011: alternate ``B = sign(Z Rᵀ)`` and the orthogonal
  Procrustes ``R`` minimising ``‖B − Z Rᵀ‖``, 50 rounds from a seeded random rotation) or by
  that seeded random rotation alone. They decode to ``x̂ = μ + Rᵀ(s ⊙ b)``, ``b = ±1`` and
  ``s`` the mean ``|R(x − μ)|`` per rotated dim, so rescoring sees each dim's scale.
* ``pqM`` / ``opqM``: faiss's product quantiser (Jégou et al., 2011): the vector is cut into
  M sub-vectors and each is replaced by the index of its nearest of 256 codewords, k-means
  centroids of the calibration sub-vectors — M bytes per vector, whatever the dims. ``opqM``
  first rotates by the orthogonal matrix ``R`` that faiss's ``OPQMatrix`` fits (Ge et al.,
  2013), as ``index_factory("OPQM,PQM")`` does; ``x̂ = R^T pq(R x)``. The dims must divide
  by M. ``pqMx4`` / ``opqMx4`` keep 16 codewords per sub-vector, two 4-bit codes to a byte
  (the first in the low nibble, as faiss packs them): M/2 bytes, the codes faiss's fast scan
  (``IndexPQFastScan``, André et al., 2015) scans from SIMD registers rather than memory.

Search (:func:`quantized_search`) ranks by the quantised index alone — dequantised query ·
dequantised codes for int8, Hamming distance for binary, the float query · the decoded
codes for PQ (faiss's asymmetric distance) — and, with ``rescore_multiplier r``,
re-ranks its top ``k·r`` with the float query against the dequantised candidates (``±1`` for
binary), as sentence-transformers' rescoring does; rescoring dequantised codes rather than raw
integer codes keeps each dimension's scale (their PR #4058).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from smec.eval import Run, mask_identical_ids
from smec.io import atomic_path
from smec.results import (
    PRECISION_BITS,
    bytes_per_vector,
    binary_fit,
    check_precision,
    is_binary,
    product_quantizer,
)

PRECISIONS = tuple(PRECISION_BITS)   # and the product quantisers pqM / opqM (x4) of any M
MIN_CALIBRATION = 100
ENCODE_BLOCK = 65536                 # rows per block when assigning PQ codewords
ITQ_ROUNDS = 50                      # the ITQ paper's count; the loss has flattened by then
ITQ_SAMPLE = 50_000                  # rows ITQ fits on: 50 rounds of n·d² each
HAMMING_BLOCK = 65536                # documents unpacked at a time when counting bits


def level_problem(precision: str, dim: int) -> str | None:
    """Why ``precision`` cannot code vectors of ``dim`` dims, or None when it can."""
    product = product_quantizer(check_precision(precision))
    if product is not None and dim % product.m:
        return (f"{precision} cuts a vector into {product.m} sub-vectors, and {dim} dims do "
                f"not divide by {product.m}")
    return None


def code_layout(precision: str, dim: int) -> tuple[np.dtype, int, bool]:
    """How codes of ``precision`` at ``dim`` dims are held: (dtype, width, opaque bytes).
    Packed bits and PQ codeword indices are opaque bytes (``uint8 [n, width]``); int8 and
    float codes are one number per dimension."""
    product = product_quantizer(check_precision(precision))
    if product is not None:
        return np.dtype(np.uint8), product.bytes, True
    if is_binary(precision):
        return np.dtype(np.uint8), (dim + 7) // 8, True
    return np.dtype({"float32": np.float32, "float16": np.float16, "int8": np.int8}[precision]), \
        dim, False


def _fit_product(precision: str, x: np.ndarray) -> dict[str, np.ndarray]:
    """Codebooks ``[M, 2^bits, dim/M]`` (and the OPQ rotation ``[dim, dim]``) fitted by
    faiss."""
    import faiss
    n, dim = x.shape
    problem = level_problem(precision, dim)
    if problem:
        raise ValueError(problem)
    kind, m, bits = spec = product_quantizer(precision)
    if n < spec.codewords:
        raise ValueError(f"{precision}: {n} calibration vectors cannot train {spec.codewords} "
                         f"codewords per sub-vector; give at least {spec.codewords}")

    def product(width: int):
        pq = faiss.ProductQuantizer(width, m, bits)
        pq.cp.min_points_per_centroid = 1   # a 5k-document corpus is enough; no warning
        return pq

    x = np.ascontiguousarray(x, np.float32)
    params = {}
    if kind == "opq":
        opq = faiss.OPQMatrix(dim, m)
        inner = product(dim)
        opq.pq = inner            # the PQ the rotation is fitted for, with the same settings
        opq.train(x)
        params["rotation"] = faiss.vector_to_array(opq.A).reshape(dim, dim).astype(np.float32)
        x = np.ascontiguousarray(x @ params["rotation"].T)
    pq = product(dim)
    pq.train(x)
    params["codebooks"] = faiss.vector_to_array(pq.centroids).reshape(
        m, spec.codewords, dim // m).astype(np.float32)
    return params


def random_rotation(dim: int, seed: int = 0) -> np.ndarray:
    """A seeded orthogonal ``[dim, dim]`` matrix, uniform (Haar) over rotations: QR of a
    Gaussian matrix with the signs of R's diagonal moved into Q."""
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


def _fit_binary(fit: str, x: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """``threshold`` (the centre), ``scale`` and, for itq/rotated, ``rotation`` of
    ``binary-<fit>`` (module docstring)."""
    if fit == "median":
        centre = np.median(x, axis=0)
        return {"threshold": centre.astype(np.float32),
                "scale": np.abs(x - centre).mean(0).astype(np.float32)}
    centre = x.mean(0)
    z = x - centre
    rotation = random_rotation(x.shape[1], seed)
    if fit == "itq":
        rng = np.random.default_rng(seed)
        sample = z[np.sort(rng.choice(len(z), ITQ_SAMPLE, replace=False))] \
            if len(z) > ITQ_SAMPLE else z
        for _ in range(ITQ_ROUNDS):
            bits = np.where(sample @ rotation.T > 0, 1.0, -1.0).astype(np.float32)
            u, _, wt = np.linalg.svd((sample.T @ bits).astype(np.float64))   # Procrustes:
            rotation = (u @ wt).T.astype(np.float32)                         # Rᵀ = U Wᵀ
    return {"threshold": centre.astype(np.float32), "rotation": rotation,
            "scale": np.abs(z @ rotation.T).mean(0).astype(np.float32)}


def compression_factor(ref_dim: int, dim: int, precision: str) -> float:
    """CF = bytes(float32 reference of ``ref_dim``) / bytes(compressed), METHOD.md §5.4."""
    return bytes_per_vector(ref_dim, "float32") / bytes_per_vector(dim, precision)


def _check_float(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{what}: expected a [n, dim] array, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{what}: got {x.dtype} values, which look already quantised; "
                         "quantise float embeddings")
    return x.astype(np.float32, copy=False)


@dataclass
class Quantizer:
    """A fitted quantiser: ``params`` holds ``lo``/``hi`` (int8), ``threshold`` (binary; the
    fitted variants add ``scale`` and, rotated, ``rotation`` ``[dim, dim]``), or
    ``codebooks`` ``[M, 256, dim/M]`` and, for OPQ, ``rotation`` ``[dim, dim]`` (PQ)."""

    precision: str
    dim: int
    params: dict[str, np.ndarray]

    @classmethod
    def fit(cls, precision: str, calibration: np.ndarray, ranges: str = "percentile",
            percentile: float = 0.1) -> Quantizer:
        """Calibrate on corpus embeddings (``ranges`` of int8: percentile|minmax; pqM/opqM
        train their codebooks with faiss, binary-<fit> its threshold and rotation); float32 is
        the identity, float16 a cast, binary the sign at zero."""
        calibration = _check_float(calibration, "calibration embeddings")
        product = product_quantizer(check_precision(precision))
        if product is not None:
            return cls(precision, calibration.shape[1], _fit_product(precision, calibration))
        fit = binary_fit(precision)
        calibrated = precision == "int8" or fit not in (None, "zero")
        if calibrated and len(calibration) < MIN_CALIBRATION:
            warnings.warn(f"calibrating {precision} on {len(calibration)} vectors (< "
                          f"{MIN_CALIBRATION}); ranges will be noisy", stacklevel=2)
        dim = calibration.shape[1]
        if fit not in (None, "zero"):
            return cls(precision, dim, _fit_binary(fit, calibration))
        if precision == "int8":
            if ranges == "percentile":
                lo, hi = np.percentile(calibration, [percentile, 100 - percentile], axis=0)
            elif ranges == "minmax":
                lo, hi = calibration.min(axis=0), calibration.max(axis=0)
            else:
                raise ValueError(f"ranges must be percentile or minmax, got {ranges!r}")
            hi = np.maximum(hi, lo + 1e-6)   # a constant dim still gets a valid range
            return cls(precision, dim, {"lo": lo.astype(np.float32),
                                        "hi": hi.astype(np.float32)})
        if precision == "binary":
            return cls.uncalibrated(precision, dim)
        return cls(precision, dim, {})

    @classmethod
    def uncalibrated(cls, precision: str, dim: int) -> Quantizer:
        """A quantiser that needs no data: float32, float16, binary at the zero threshold."""
        if precision == "binary":
            return cls(precision, dim, {"threshold": np.zeros(dim, np.float32)})
        if precision in ("float32", "float16"):
            return cls(precision, dim, {})
        raise ValueError(f"{precision} needs calibration vectors; use Quantizer.fit")

    def bytes_per_vector(self) -> int:
        return bytes_per_vector(self.dim, self.precision)

    @property
    def nibbles(self) -> bool:
        """4-bit PQ codes (16 codewords per sub-vector), two to a byte."""
        product = product_quantizer(self.precision)
        return product is not None and product.bits == 4

    @property
    def asymmetric(self) -> bool:
        """A product quantiser: queries stay float and meet the decoded codes."""
        return "codebooks" in self.params

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Float ``[n, dim]`` → codes: int8 or float16 ``[n, dim]``, packed uint8 ``[n, dim/8]``,
        PQ codeword indices uint8 ``[n, M]`` (``[n, M/2]``, two to a byte, for 4 bits)."""
        x = _check_float(x, f"{self.precision} encode")
        if x.shape[1] != self.dim:
            raise ValueError(f"{self.precision} quantiser was fitted on {self.dim} dims, "
                             f"got {x.shape[1]}")
        if self.precision == "int8":
            lo, hi = self.params["lo"], self.params["hi"]
            codes = np.rint((x - lo) / (hi - lo) * 255.0) - 128.0
            return np.clip(codes, -128, 127).astype(np.int8)
        if is_binary(self.precision):
            centred = x - self.params["threshold"]
            if "rotation" in self.params:
                centred = centred @ self.params["rotation"].T
            return np.packbits(centred > 0, axis=1)
        if self.precision == "float16":
            return x.astype(np.float16)
        if self.asymmetric:
            return self._product_codes(x)
        return x

    def _product_codes(self, x: np.ndarray) -> np.ndarray:
        """The nearest codeword of every sub-vector: uint8 ``[n, M]``, packed to ``[n, M/2]``
        for 16 codewords."""
        if "rotation" in self.params:
            x = x @ self.params["rotation"].T
        books = self.params["codebooks"]
        m, _, width = books.shape
        norms = (books ** 2).sum(-1)
        codes = np.empty((len(x), m), np.uint8)
        for start in range(0, len(x), ENCODE_BLOCK):
            block = x[start:start + ENCODE_BLOCK]
            for j in range(m):
                part = block[:, j * width:(j + 1) * width]
                codes[start:start + len(block), j] = np.argmin(norms[j] - 2 * part @ books[j].T,
                                                               axis=1)
        return codes[:, 0::2] | codes[:, 1::2] << 4 if self.nibbles else codes

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Codes → float32 ``[n, dim]``: dequantised values (int8), ``±1`` (binary; the fitted
        variants ``μ + Rᵀ(s ⊙ ±1)``), the codewords (PQ, rotated back for OPQ)."""
        if self.precision == "int8":
            lo, hi = self.params["lo"], self.params["hi"]
            return ((codes.astype(np.float32) + 128.0) / 255.0 * (hi - lo) + lo).astype(
                np.float32)
        if is_binary(self.precision):
            signs = np.unpackbits(codes, axis=1, count=self.dim).astype(np.float32) * 2.0 - 1.0
            if "scale" not in self.params:
                return signs
            x = signs * self.params["scale"]
            if "rotation" in self.params:
                x = x @ self.params["rotation"]
            return x + self.params["threshold"]
        if self.asymmetric:
            books = self.params["codebooks"]
            if self.nibbles:     # two 4-bit codes to a byte, the first in the low nibble
                codes = np.stack([codes & 15, codes >> 4], axis=2).reshape(len(codes), -1)
            x = books[np.arange(len(books)), codes].reshape(len(codes), self.dim)
            return x @ self.params["rotation"] if "rotation" in self.params else x
        return np.asarray(codes, np.float32)

    # --- persistence: saved beside the compressor it quantises -------------------------
    def save(self, path: Path | str) -> None:
        with atomic_path(Path(path)) as tmp, open(tmp, "wb") as f:
            np.savez(f, precision=np.array(self.precision), dim=np.array(self.dim),
                     **self.params)

    @classmethod
    def load(cls, path: Path | str) -> Quantizer:
        with np.load(path) as blob:
            params = {k: blob[k] for k in blob.files if k not in ("precision", "dim")}
            return cls(str(blob["precision"]), int(blob["dim"]), params)


def _hamming(query_bits: np.ndarray, doc_bits: np.ndarray) -> np.ndarray:
    """Hamming distances ``[nq, nd]`` between packed bit arrays, as ``(bits − s·t) / 2`` of
    their ±1 forms: float matrix products (exact: the sums are small integers), where a
    per-query popcount loop in numpy is ~100× slower; the documents are unpacked
    ``HAMMING_BLOCK`` at a time, so memory stays bounded on a large corpus."""
    def signs(bits: np.ndarray) -> np.ndarray:
        out = np.unpackbits(bits, axis=1).astype(np.float32)
        out *= 2.0
        out -= 1.0
        return out
    queries = signs(query_bits)
    out = np.empty((len(query_bits), len(doc_bits)), np.int32)
    for start in range(0, len(doc_bits), HAMMING_BLOCK):
        agreement = queries @ signs(doc_bits[start:start + HAMMING_BLOCK]).T
        out[:, start:start + HAMMING_BLOCK] = np.rint((queries.shape[1] - agreement) / 2)
    return out


def quantized_scores(quantizer: Quantizer, queries: np.ndarray,
                     doc_codes: np.ndarray) -> np.ndarray:
    """First-pass similarity of float ``queries`` on the quantised index alone (higher is
    better): Hamming for binary, the float query against the decoded codes for PQ (faiss's
    asymmetric distance), the quantised query against the decoded codes otherwise."""
    if is_binary(quantizer.precision):
        return -_hamming(quantizer.encode(queries), doc_codes).astype(np.float32)
    if quantizer.asymmetric:
        return queries @ quantizer.decode(doc_codes).T
    return quantizer.decode(quantizer.encode(queries)) @ quantizer.decode(doc_codes).T


def quantized_search(quantizer: Quantizer, query_vecs: np.ndarray, query_ids: list[str],
                     doc_codes: np.ndarray, doc_ids: list[str], k: int = 100,
                     rescore_multiplier: int = 0, ignore_identical_ids: bool = True,
                     batch_size: int = 256) -> Run:
    """Top-``k`` per query from the quantised index; with ``rescore_multiplier`` r > 0, the
    top ``k·r`` are re-ranked by float query · dequantised candidates. As in
    :func:`smec.eval.exact_search`, a document whose id equals the query's is never returned
    (BEIR's ``ignore_identical_ids``: ArguAna, Quora)."""
    if rescore_multiplier < 0:
        raise ValueError(f"rescore_multiplier must be >= 0, got {rescore_multiplier}")
    query_vecs = _check_float(query_vecs, "queries")
    n_docs = len(doc_ids)
    first_k = min(n_docs, k * rescore_multiplier if rescore_multiplier else k)
    doc_index = {doc_id: i for i, doc_id in enumerate(doc_ids)} if ignore_identical_ids else {}
    run: Run = {}
    for start in range(0, len(query_ids), batch_size):
        q = query_vecs[start:start + batch_size]
        scores = quantized_scores(quantizer, q, doc_codes)
        mask_identical_ids(scores, query_ids[start:start + batch_size], doc_index)
        top = np.argpartition(-scores, first_k - 1, axis=1)[:, :first_k]
        for row, qid in enumerate(query_ids[start:start + batch_size]):
            cand = top[row][np.isfinite(scores[row, top[row]])]
            if rescore_multiplier:
                cand_scores = quantizer.decode(doc_codes[cand]) @ q[row]
                keep = np.argsort(-cand_scores, kind="stable")[:k]
                run[qid] = {doc_ids[cand[j]]: float(cand_scores[j]) for j in keep}
            else:
                run[qid] = {doc_ids[j]: float(scores[row, j]) for j in cand[:k]}
    return run
