"""compress, export, index, search, plan: from a trained compressor to served codes, the query
encoder, a faiss index, searches, and the pick for a byte budget."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from smec.cli.common import (
    beside,
    caller_dir,
    compressor_dir,
    embed_line,
    precision_arg,
    set_options,
    verbose_option,
)
from smec.console import RAY_LOG, echo
from smec.errors import SmecError


def add_parsers(sub) -> None:
    _compress_parser(sub)
    _export_parser(sub)
    _search_parsers(sub)


def _compress_parser(sub) -> None:
    command = sub.add_parser(
        "compress", help="apply a trained compressor to a whole corpus (Ray Data) -> codes",
        description="Compress every vector of an embedding store (--store), or embed and "
                    "compress a corpus file in one pass (--corpus), with a trained compressor "
                    "at one level and precision. Writes OUT/part-*.parquet (id + codes: float32/"
                    "float16 lists, int8 lists, packed bits or PQ codeword bytes), manifest.json "
                    "and, for int8/PQ, quantizer.npz (calibrated on corpus vectors; quantise queries with it). "
                    "A killed run resumes where it stopped.",
        epilog="example: smec compress --store runs/scifact-mini/embeddings/corpus "
               "--compressor runs/scifact-mini/compressor --dims 48 --precision int8 "
               "--out runs/scifact-mini/codes-48-int8")
    given = command.add_mutually_exclusive_group(required=True)
    given.add_argument("--store", type=Path, help="embedding store folder (`smec embed` wrote it)")
    given.add_argument("--corpus", type=Path, help="a corpus.jsonl, JSONL or Parquet file: embed "
                       "and compress in one pass, the float vectors are never stored")
    command.add_argument("--compressor", type=Path, required=True,
                         help="compressor folder (RUN/compressor) or its run folder")
    command.add_argument("--dims", type=int, required=True, help="the level to keep")
    command.add_argument("--precision", default="float32", type=precision_arg,
                         help="float32, float16, int8, binary (or binary-median / -itq / "
                              "-rotated: a fitted threshold and rotation), pqM / opqM: a "
                              "faiss product quantiser of M bytes per vector (M must divide "
                              "--dims), or pqMx4 / opqMx4: M 4-bit codes, M/2 bytes, searched "
                              "by faiss's fast scan (M even)")
    command.add_argument("--out", type=Path, required=True, help="codes folder to write")
    command.add_argument("--model", default=None, help="--corpus: the base model (default: "
                         "the one the compressor was trained on; another one is refused)")
    command.add_argument("--id-field", default=None, help="--corpus: the id field")
    command.add_argument("--text-field", default="text", help="--corpus: the text field")
    command.add_argument("--num-gpus", type=float, default=None,
                         help="GPUs per compressor actor (overrides compress.num_gpus_per_actor)")
    command.add_argument("--num-actors", type=int, default=None,
                         help="compressor actors (overrides compress.num_actors)")
    command.add_argument("--calibration-rows", type=int, default=None,
                         help="int8, pqM, binary-<fit>: corpus vectors sampled to calibrate "
                              "(overrides compress.calibration_rows)")
    command.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                         help="skip the parts an earlier (killed) run finished (default: on)")
    command.add_argument("--config", type=Path, default=None, help="YAML config")
    verbose_option(command)


def _export_parser(sub) -> None:
    command = sub.add_parser(
        "export", help="write the query encoder: base model + compressor as a "
                       "sentence-transformers folder",
        description="Write OUT_DIR, a sentence-transformers model folder: the base model, its "
                    "prompts and the compressor at one level. SentenceTransformer(OUT_DIR, "
                    "trust_remote_code=True).encode(texts, prompt_name='query') returns the "
                    "vectors the pipeline scores. A linear level (PCA, truncation) is written "
                    "with built-in Dense + Normalize modules only and needs no custom code.",
        epilog="example: smec export runs/scifact-mini runs/scifact-mini/encoder-48 --dims 48")
    command.add_argument("run_dir", type=Path, help="run folder (its compressor/) or a "
                         "compressor folder")
    command.add_argument("out_dir", type=Path, help="the model folder to write")
    command.add_argument("--dims", type=int, default=None,
                         help="the level (default: the compressor's smallest)")
    command.add_argument("--precision", default="float32", type=precision_arg,
                         help="int8/binary/pqM/opqM: ship the calibration the corpus codes "
                              "were made with (from --codes, else the compressor's own)")
    command.add_argument("--codes", type=Path, default=None,
                         help="the codes folder `smec compress` wrote: its quantiser and "
                              "level are the ones the queries must match")


def _search_parsers(sub) -> None:
    index = sub.add_parser(
        "index", help="build a faiss index from compressed codes",
        description="Build a faiss index (flat, HNSW or IVF, inner product; int8 through the scalar "
                    "quantizer with the codes' own calibration; binary through the binary "
                    "indexes on the packed bits) from the parts `smec compress` wrote, one "
                    "part in memory at a time. Writes OUT/index.faiss, ids.txt, codes.npy (for "
                    "rescoring), quantizer.npz and manifest.json, atomically.",
        epilog="example: smec index --codes runs/scifact-mini/codes-48-int8 "
               "--out runs/scifact-mini/index-48-int8")
    index.add_argument("--codes", type=Path, required=True, help="codes folder (smec compress)")
    index.add_argument("--out", type=Path, required=True, help="index folder to write")
    index.add_argument("--kind", choices=["flat", "hnsw", "ivf"], default="flat",
                       help="flat: exact scan of the codes; hnsw: a graph; ivf: inverted lists "
                            "(nprobe of nlist scanned per query), for corpora a scan cannot serve")
    index.add_argument("--hnsw-m", type=int, default=32, help="HNSW graph degree")
    index.add_argument("--nlist", type=int, default=None,
                       help="--kind ivf: the number of lists (default about 4·sqrt(n))")
    index.add_argument("--encoder", type=Path, default=None,
                       help="the exported query encoder (smec export) to record for search")
    index.add_argument("--rescore-codes", type=Path, default=None,
                       help="another codes folder of the same compressor and level (e.g. int8 "
                            "beside binary codes) to rescore candidates with; kept on disk")
    search = sub.add_parser(
        "search", help="search an index with query text; --queries for a TREC run",
        description="Encode the query (the exported model, or the base model + compressor), "
                    "take R·k candidates from the index and rescore them with the float query "
                    "against the dequantised codes (no float documents needed).",
        epilog='example: smec search runs/scifact-mini/index-48-int8 "vitamin D and flu" '
               "--rescore 4 --corpus smec/datasets/scifact-mini/corpus.jsonl")
    search.add_argument("index", type=Path, help="index folder (smec index)")
    search.add_argument("query", nargs="?", default=None, help="the query text")
    search.add_argument("-k", type=int, default=10, help="results per query (default 10)")
    search.add_argument("--rescore", type=int, default=1,
                        help="R: rescore the top R·k candidates (default 1; 4 for binary)")
    search.add_argument("--corpus", type=Path, default=None,
                        help="corpus.jsonl to print each hit's title or a snippet")
    search.add_argument("--encoder", type=Path, default=None,
                        help="exported query encoder (default: the index's, else the base "
                             "model + compressor)")
    search.add_argument("--ef-search", type=int, default=64,
                        help="HNSW indexes: the search queue length (recall against speed)")
    search.add_argument("--nprobe", type=int, default=16,
                        help="IVF indexes: lists scanned per query (recall against speed)")
    search.add_argument("--queries", type=Path, default=None,
                        help="batch mode: a queries.jsonl; needs --out")
    search.add_argument("--out", type=Path, default=None, help="batch mode: the TREC run file")
    plan = sub.add_parser(
        "plan", help="recommend a compressor for a bytes-per-vector budget",
        description="Build the Pareto front of (bytes/vector -> best hold-out nDCG@10) over "
                    "every method, level and precision of measured results, and recommend the "
                    "best under the budget. Ranks by hold-out (train-query) scores only; the "
                    "test score is shown for information.",
        epilog="example: smec plan --bytes-per-vector 48 runs/scifact-mini/results.json")
    plan.add_argument("results", type=Path, nargs="*",
                      help="results.json files (bench, concat or demo; default: "
                           "runs/*/results.json)")
    plan.add_argument("--bytes-per-vector", type=int, required=True)
    plan.add_argument("--out", type=Path, default=None,
                      help="the front's PNG (default: pareto.png beside the first results)")


def _compress(args: argparse.Namespace) -> int:
    """`smec compress`: a compressor over a store or a corpus file -> a codes folder."""
    from smec.config import load_config
    from smec.corpus import DEFAULT_ID_FIELDS, Source
    from smec.pipelines.compress import plan_corpus, plan_store, run_compress
    cfg = load_config(args.config)
    set_options(cfg, "compress", {"num_gpus_per_actor": ("--num-gpus", args.num_gpus),
                               "num_actors": ("--num-actors", args.num_actors),
                               "calibration_rows": ("--calibration-rows",
                                                    args.calibration_rows)})
    compressor = compressor_dir(args.compressor)
    if args.store is not None:
        job = plan_store(args.store, compressor, args.dims, args.precision, args.out, cfg,
                         resume=args.resume)
    else:
        if not args.corpus.is_file():
            raise SmecError(f"--corpus {args.corpus}: file not found")
        source = Source(args.corpus, (args.id_field,) if args.id_field else DEFAULT_ID_FIELDS,
                        args.text_field)
        job = plan_corpus(source, compressor, args.dims, args.precision, args.out, cfg,
                          model=args.model, resume=args.resume)
    from smec.pipelines.runtime import ray_output
    interactive = sys.stderr.isatty()
    with ray_output(beside(args.out, RAY_LOG), args.verbose):
        summary = run_compress(job, resume=args.resume, progress=interactive)
    line = embed_line(summary, args.out).replace("embedded", "compressed").replace(
        "docs/s", "vectors/s")
    echo(f"{line} ({args.dims} d {args.precision})")
    return 0


def _export(args: argparse.Namespace) -> int:
    """`smec export`: the query encoder as a sentence-transformers folder."""
    from smec.export import export_model
    info = export_model(compressor_dir(args.run_dir), args.out_dir, dim=args.dims,
                        precision=args.precision, codes=args.codes)
    custom = "" if info["builtin_only"] else "; load it with trust_remote_code=True"
    echo(f"exported {info['models']} + {info['compressor_kind']} at {info['dim']} d "
         f"({info['precision']}) to {args.out_dir}{custom}")
    return 0


def _index(args: argparse.Namespace) -> int:
    from smec.index import build_index
    manifest = build_index(args.codes, args.out, args.kind, args.hnsw_m, args.encoder,
                           args.rescore_codes, args.nlist)
    echo(f"indexed {manifest['count']} {manifest['precision']} codes of {manifest['dim']} d "
         f"({args.kind}, {manifest['index_bytes'] / 1e6:.1f} MB) into {args.out}")
    return 0


def _search(args: argparse.Namespace) -> int:
    """`smec search`: one query printed, or every query of a file into a TREC run."""
    from smec.index import Searcher
    searcher = Searcher(args.index, args.encoder, args.ef_search, args.nprobe)
    if args.queries is not None:
        from smec.runfile import write_trec_run
        if args.out is None:
            raise SmecError("--queries needs --out RUN.tsv (the TREC run file to write)")
        count = write_trec_run(searcher, args.queries, args.out, args.k, args.rescore)
        echo(f"searched {count} queries; run: {args.out}")
        return 0
    if args.query is None:
        raise SmecError("give a query text, or --queries FILE --out RUN.tsv")
    hits = searcher.search([args.query], args.k, args.rescore)[0]
    from smec.runfile import snippets
    texts = snippets(args.corpus, [doc for doc, _ in hits]) if args.corpus else {}
    for rank, (doc, score) in enumerate(hits, 1):
        echo(f"{rank:>3}  {score:.4f}  {doc}  {texts.get(doc, '')}".rstrip())
    return 0


def _plan(args: argparse.Namespace) -> int:
    """`smec plan`: the Pareto front of measured results and the pick under a budget."""
    from smec.plan import choices, front_table, pareto_front, plot_front, recommend
    paths = args.results or sorted((caller_dir() / "runs").glob("*/results.json"))
    if not paths:
        from smec.plan import MAKE_RESULTS
        raise SmecError(MAKE_RESULTS)
    for path in paths:
        if not path.is_file():
            raise SmecError(f"{path}: not found")
    found = choices(paths)
    front = pareto_front(found)
    pick = recommend(found, args.bytes_per_vector)
    echo(front_table(front, pick))
    if pick is None:
        cheapest = min(c.bytes_per_vector for c in found)
        echo(f"\nnothing measured fits {args.bytes_per_vector} bytes/vector; the smallest "
             f"measured configuration takes {cheapest}")
    else:
        test = f", test {pick.test_ndcg:.4f} (information only)" \
            if pick.test_ndcg is not None else ""
        echo(f"\nrecommended for {args.bytes_per_vector} bytes/vector: {pick.label()} "
             f"({pick.bytes_per_vector} B, hold-out nDCG@10 {pick.holdout_ndcg:.4f}{test}; "
             f"from {pick.source})")
    png = args.out or paths[0].parent / "pareto.png"
    echo(f"plot: {plot_front(found, front, pick, args.bytes_per_vector, png)}")
    return 0



COMMANDS = {"compress": _compress, "export": _export, "index": _index, "search": _search,
            "plan": _plan}
