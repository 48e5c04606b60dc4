"""Evaluate several compressors side by side at every level (and precision), into result rows."""
from __future__ import annotations

import numpy as np

from smec.compressors import PCA, Compressor, Truncation
from smec.data import Qrels
from smec.eval import evaluate_run, evaluate_vectors
from smec.quantize import Quantizer, level_problem, quantized_search
from smec.results import BINARY_FITS, ResultRow, is_binary, product_quantizer

DEPTH = 100   # retrieval depth: recall@100, and the rescoring pool is DEPTH × multiplier

Precision = tuple[str, int]   # (float32 | int8 | binary | pqM | opqM, rescore multiplier; 0 = none)


def precisions_of(names: list[str], rescore_multiplier: int) -> list[Precision]:
    """The precisions an ``eval`` section asks for; each binary one also rescored when the
    multiplier is > 0."""
    out = [(name, 0) for name in names]
    if rescore_multiplier:
        out += [(name, rescore_multiplier) for name in names if is_binary(name)]
    return out


def baselines(input_dim: int, dims: list[int], corpus: np.ndarray,
              methods: list[str]) -> dict[str, Compressor]:
    """The untrained compressors named in ``methods``, fitted on the corpus where they learn.
    ``raw`` is the identity (one level, ``input_dim``): kept between calls, it keeps the
    quantisers calibrated on the raw vectors too."""
    out: dict[str, Compressor] = {}
    if "raw" in methods:
        out["raw"] = Truncation(input_dim, [input_dim])
    if "truncation" in methods:
        out["truncation"] = Truncation(input_dim, dims)
    if "pca" in methods:
        out["pca"] = PCA(input_dim, dims).fit(corpus)
    if "pca_uncentred" in methods:   # the pca_residual adapter's starting point
        out["pca_uncentred"] = PCA(input_dim, dims, centre=False).fit(corpus)
    return out


def score_vectors(method: str, query_vecs: np.ndarray, query_ids: list[str],
                  doc_vecs: np.ndarray, doc_ids: list[str], qrels: Qrels,
                  precision: Precision = ("float32", 0), quantizer: Quantizer | None = None,
                  seed: int = 0, **quantizer_options) -> ResultRow:
    """One row: search at ``precision`` (a quantiser is calibrated on ``doc_vecs`` when none
    is given), then nDCG@10 and recall@100 on the judged queries."""
    judged = [i for i, q in enumerate(query_ids) if q in qrels]
    q_ids, q_vecs = [query_ids[i] for i in judged], query_vecs[judged]
    kind, rescore = precision
    if kind == "float32":
        metrics = evaluate_vectors(q_vecs, q_ids, doc_vecs, doc_ids, qrels, k=DEPTH)
    else:
        quantizer = quantizer or Quantizer.fit(kind, doc_vecs, **quantizer_options)
        run = quantized_search(quantizer, q_vecs, q_ids, quantizer.encode(doc_vecs), doc_ids,
                               k=DEPTH, rescore_multiplier=rescore)
        metrics = evaluate_run(run, qrels, ndcg_k=10, recall_k=DEPTH)
    return ResultRow(method, doc_vecs.shape[1], metrics["ndcg_at_10"],
                     metrics[f"recall_at_{DEPTH}"], kind, seed,
                     extra={"rescore": rescore} if rescore else {})


def compare(doc_ids: list[str], doc_vecs: np.ndarray, query_ids: list[str],
            query_vecs: np.ndarray, qrels: Qrels, compressors: dict[str, Compressor],
            include_raw: bool = True, seed: int = 0,
            precisions: list[Precision] = (("float32", 0),),
            **quantizer_options) -> list[ResultRow]:
    """One row per (method, level, precision) on ``qrels``' queries; a precision a level
    cannot take (PQ whose M does not divide the dims, or on fewer than 256 documents) is
    skipped. Quantisers of a
    compressor's level are calibrated on its corpus vectors and kept in the compressor;
    ``include_raw`` adds the raw vectors (``compressors["raw"]`` when given, to reuse its
    quantisers)."""
    if include_raw and "raw" not in compressors:
        compressors = {**baselines(doc_vecs.shape[1], [], doc_vecs, ["raw"]), **compressors}
    elif not include_raw:
        compressors = {k: v for k, v in compressors.items() if k != "raw"}
    rows = []
    for method, compressor in compressors.items():
        for dim in compressor.dims:
            docs, queries = compressor.encode(doc_vecs, dim), compressor.encode(query_vecs, dim)
            for p in precisions:
                product = product_quantizer(p[0])
                if level_problem(p[0], dim) or (product and len(doc_vecs) < product.codewords):
                    continue   # PQ: M must divide the dims, k codewords need k documents
                quantizer = None
                if p[0] != "float32":
                    quantizer = compressor.quantizers.get((dim, p[0])) or \
                        compressor.quantize(p[0], dim, doc_vecs, **quantizer_options)
                rows.append(score_vectors(method, queries, query_ids, docs, doc_ids, qrels, p,
                                          quantizer, seed))
    return rows


#: Binary codes at the zero threshold and at every fitted threshold / rotation.
BINARY_PRECISIONS = ("binary", *(f"binary-{fit}" for fit in BINARY_FITS))
#: The recipes a user already has, at every byte size: float, int8, and binary with and without
#: rescoring, its threshold at zero or fitted (ITQ and a random rotation included).
RECIPE_PRECISIONS: list[Precision] = [("float32", 0), ("int8", 0)] + \
    [(name, rescore) for name in BINARY_PRECISIONS for rescore in (0, 4)]
#: What a faiss user has for the raw vectors too: PQ (and OPQ) at 24, 48 and 96 B per vector.
PRODUCT_BYTES = (24, 48, 96)
RAW_PRODUCTS = [f"pq{m}" for m in PRODUCT_BYTES]
OPQ_PRODUCTS = [f"opq{m}" for m in PRODUCT_BYTES]
UNTRAINED = ("raw", "truncation", "pca", "pca_uncentred")
RECIPES = ["raw", "truncation", "pca", "pca_uncentred"]


def holdout_rows(doc_ids: list[str], doc_vecs: np.ndarray, query_ids: list[str],
                 query_vecs: np.ndarray, holdout: Qrels, trained: dict[str, Compressor],
                 recipes: dict[str, Compressor], seed: int = 0,
                 precisions: list[Precision] = (("float32", 0),),
                 raw_products: list[str] = tuple(RAW_PRODUCTS)) -> list[ResultRow]:
    """Rows on the hold-out of *training* queries (``split: holdout``): the trained levels at
    ``precisions``, raw at :data:`RECIPE_PRECISIONS` and the faiss product quantisers
    ``raw_products`` (``eval.recipe_products``), and the untrained ``recipes``
    (:func:`baselines`: truncation, PCA centred and not) at :data:`RECIPE_PRECISIONS`, so a
    trained level can be judged against what it replaces without looking at test."""
    raw = {"raw": recipes["raw"]} if "raw" in recipes else {}
    rows = compare(doc_ids, doc_vecs, query_ids, query_vecs, holdout, raw, seed=seed,
                   precisions=RECIPE_PRECISIONS + [(p, 0) for p in raw_products])
    rows += compare(doc_ids, doc_vecs, query_ids, query_vecs, holdout, recipes,
                    include_raw=False, seed=seed, precisions=RECIPE_PRECISIONS)
    rows += compare(doc_ids, doc_vecs, query_ids, query_vecs, holdout, trained,
                    include_raw=False, seed=seed, precisions=list(precisions))
    for row in rows:
        row.extra["split"] = "holdout"
    return rows


def recipe_check(rows: list[ResultRow]) -> list[dict]:
    """For each trained hold-out row: the best untrained recipe at no more bytes, and whether
    the trained level beats it (``wins``). Where it does not, the recipe is the one to use."""
    holdout = [r for r in rows if r.extra.get("split") == "holdout"]
    recipes = [r for r in holdout if r.method in UNTRAINED]
    out = []
    for row in holdout:
        if row.method in UNTRAINED:
            continue
        within = [r for r in recipes if r.seed == row.seed
                  and r.bytes_per_vector <= row.bytes_per_vector]
        best = max(within, key=lambda r: r.ndcg_at_10, default=None)
        out.append({"method": row.method, "dims": row.dims, "precision": row.precision,
                    "seed": row.seed, "bytes_per_vector": row.bytes_per_vector,
                    "holdout_ndcg_at_10": round(row.ndcg_at_10, 4),
                    "best_recipe": None if best is None else {
                        "method": best.method, "dims": best.dims, "precision": best.precision,
                        "rescore": best.extra.get("rescore", 0),
                        "holdout_ndcg_at_10": round(best.ndcg_at_10, 4)},
                    "wins": best is None or row.ndcg_at_10 > best.ndcg_at_10})
    return out


def recipe_summary(checks: list[dict]) -> str:
    """One line: how many trained levels lose to an untrained recipe on the hold-out, and the
    worst case; ``recipe_check`` in results.json lists every level."""
    losers = [c for c in checks if not c["wins"]]
    if not losers:
        return f"hold-out: every trained level ({len(checks)}) beats the untrained recipes " \
               "at its bytes"
    worst = max(losers, key=lambda c: c["best_recipe"]["holdout_ndcg_at_10"]
                - c["holdout_ndcg_at_10"])
    b = worst["best_recipe"]
    recipe = f"{b['method']} {b['dims']}d {b['precision']}" + \
        (f"+rescore x{b['rescore']}" if b["rescore"] else "")
    methods = sorted({c["method"] for c in losers})
    return (f"hold-out: {len(losers)} of {len(checks)} trained levels ({', '.join(methods)}) "
            f"lose to an untrained recipe at equal or fewer bytes - use the recipe there "
            f"(recipe_check in results.json); worst: {worst['method']} {worst['dims']}d "
            f"seed {worst['seed']} {worst['holdout_ndcg_at_10']:.4f} < {recipe} "
            f"{b['holdout_ndcg_at_10']:.4f} at {worst['bytes_per_vector']} B")


def recipe_report(rows: list[ResultRow]) -> dict:
    """``{"recipe_check": …, "recipe_summary": …}``: the two keys results.json carries."""
    checks = recipe_check(rows)
    return {"recipe_check": checks, "recipe_summary": recipe_summary(checks)}
