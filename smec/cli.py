"""``smec …``: parse, validate, call the pipelines. Errors end as one line on stderr."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from smec.console import RAY_LOG, echo, progress_stream
from smec.errors import SmecError

SUPERVISION = ("qrels", "pseudo", "none")
DESCRIPTION = """smec — compress retrieval embeddings (SMEC: SMRL + ADS + S-XBM) on Ray.

Every job reads and writes one run folder (--out, default runs/<dataset>):
  embeddings/{corpus,queries}/part-*.parquet   (smec embed)
  compressor/                                   (smec train)
  results.json, results.md, ndcg_vs_bytes.png   (smec evaluate)
`smec demo` runs the three in a row on the bundled SciFact-mini set. Then
`smec compress` writes the corpus codes and `smec export` the query encoder."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/); "
                             "default: the bundled SciFact-mini")
    parser.add_argument("--out", type=Path, default=None,
                        help="run folder (default: runs/<dataset name>)")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML config (default: the bundled one; see `smec config`)")
    _verbose(parser)


def _verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true",
                        help=f"show Ray's own output live (default: only smec's progress; "
                             f"Ray's goes to {RAY_LOG} in the output folder)")


def _embed_options(command: argparse.ArgumentParser) -> None:
    command.add_argument("--corpus", type=Path, default=None,
                         help="embed this one file instead of a BEIR folder: a corpus.jsonl, any "
                              "JSONL or a Parquet file; --out is then the store folder "
                              "(part-*.parquet, manifest.json, bad_rows.jsonl)")
    command.add_argument("--model", default=None,
                         help="model name or local folder (overrides model.name)")
    command.add_argument("--id-field", default=None,
                         help="--corpus: the id field (default: '_id', else 'id')")
    command.add_argument("--text-field", default="text",
                         help="--corpus: the text field (default: text; a non-empty 'title' "
                              "is joined before it, as BEIR does)")
    command.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                         help="skip the input shards an earlier (killed) run finished "
                              "(default: on)")
    command.add_argument("--on-bad-row", choices=["stop", "quarantine"], default="stop",
                         help="stop at the first bad row (file:line: reason), or write bad rows "
                              "to bad_rows.jsonl and carry on (default: stop)")


def _embed_file(args: argparse.Namespace) -> int:
    """`smec embed --corpus FILE --out DIR`: one file into one store folder."""
    from smec.config import load_config
    from smec.corpus import DEFAULT_ID_FIELDS, Source
    from smec.pipelines.embed import run_embed_corpus
    if args.out is None:
        raise SmecError("--corpus needs --out DIR (the folder the embeddings go to)")
    if args.data_dir is not None:
        raise SmecError("pass either --corpus FILE or --data-dir DIR, not both")
    if not args.corpus.is_file():
        raise SmecError(f"--corpus {args.corpus}: file not found")
    cfg = load_config(args.config)
    _options(cfg, "model", {"name": ("--model", args.model)})
    source = Source(args.corpus, (args.id_field,) if args.id_field else DEFAULT_ID_FIELDS,
                    args.text_field)
    from smec.pipelines.runtime import ray_output
    interactive = sys.stderr.isatty()
    with ray_output(_beside(args.out, RAY_LOG), args.verbose):
        summary = run_embed_corpus(source, args.out, cfg, resume=args.resume,
                                   on_bad_row=args.on_bad_row, progress=interactive)
    echo(_embed_line(summary, args.out))
    return 0


def _embed_line(summary: dict, where: Path) -> str:
    """The final summary line: rows, bytes written, docs/s."""
    if summary.get("skipped"):
        return f"{where}: already complete ({summary['rows']} rows); nothing to do"
    bad = f", {summary['bad_rows']} bad rows in {where / 'bad_rows.jsonl'}" \
        if summary["bad_rows"] else ""
    resumed = f", {summary['shards_resumed']} of {summary['shards']} shards resumed" \
        if summary["shards_resumed"] else ""
    return (f"embedded {summary['new_rows']} rows in {summary['seconds']} s "
            f"({summary['rows_per_s']} docs/s), {summary['bytes_written'] / 1e6:.1f} MB written"
            f"{resumed}{bad}; {summary['rows']} rows in {where}")


def _precision(value: str) -> str:
    from smec.results import check_precision
    try:
        return check_precision(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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
    command.add_argument("--precision", default="float32", type=_precision,
                         help="float32, float16, int8, binary, or pqM / opqM: a faiss product "
                              "quantiser of M bytes per vector (M must divide --dims)")
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
                         help="int8: corpus vectors sampled for the ranges "
                              "(overrides compress.calibration_rows)")
    command.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                         help="skip the parts an earlier (killed) run finished (default: on)")
    command.add_argument("--config", type=Path, default=None, help="YAML config")
    _verbose(command)


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
    command.add_argument("--precision", default="float32", type=_precision,
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smec", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _pipeline_parsers(sub)
    _compress_parser(sub)
    _export_parser(sub)
    _search_parsers(sub)
    _tune_and_concat_parsers(sub)
    sub.add_parser("config", help="print the default config (YAML) to start your own from",
                   description="print the default config (YAML) to start your own from")
    _bench_parser(sub)
    _cluster_parsers(sub)
    return parser


def _pipeline_parsers(sub) -> None:
    """demo, embed, train, evaluate: on a BEIR folder and a run folder."""
    for name, help_text in [
        ("demo", "embed, train and evaluate in a row; prints the table"),
        ("embed", "embed corpus and queries with Ray Data into Parquet"),
        ("train", "train the compressor (SMEC by default) with Ray Train on the embeddings"),
        ("evaluate", "nDCG@10 of raw, truncation, PCA and the trained compressor; "
                     "results.json + plot"),
    ]:
        command = sub.add_parser(name, help=help_text, description=help_text)
        _common(command)
        if name == "train":
            command.add_argument("--resume", action="store_true",
                                 help="continue from the last checkpoint of this run "
                                      "folder instead of starting over")
        if name in ("train", "demo"):
            command.add_argument("--mlflow-uri", default=None,
                                 help="MLflow tracking URI (default: sqlite:///OUT/mlflow.db)")
            command.add_argument("--supervision", choices=SUPERVISION, default=None,
                                 help="qrels: the judged training queries; pseudo: pairs mined "
                                      "from the corpus (title or a sentence -> its document); "
                                      "none: the corpus alone (default: train.supervision, "
                                      "auto: qrels where train/dev qrels exist, else "
                                      "label-free)")
        if name == "train":
            command.add_argument("--store", type=Path, default=None,
                                 help="train on this corpus embedding store alone (`smec embed "
                                      "--corpus` wrote it; no queries, no qrels): needs --out "
                                      "and --supervision none")
        if name == "embed":
            _embed_options(command)
        if name == "evaluate":
            command.add_argument("--compressor", type=Path, default=None,
                                 help="score this compressor (OTHER_RUN/compressor, trained on "
                                      "another dataset with the same base model) on the "
                                      "embeddings of --out instead of the one trained there")
            command.add_argument("--run", type=Path, default=None,
                                 help="score this TREC run file (qid Q0 docid rank score tag; "
                                      "`smec search --queries … --out` writes one) against the "
                                      "test qrels of --data-dir instead")


def _tune_and_concat_parsers(sub) -> None:
    tune_cmd = sub.add_parser(
        "tune", help="Ray Tune search over the train settings (ASHA, MLflow); best config + "
                     "its test results",
        description="Search the `tune.space` of the config with Ray Tune (ASHA on the hold-out "
                    "of train queries), log every trial to MLflow, write OUT/best_config.yaml "
                    "and evaluate the best model once on test. Embeds first when OUT has no "
                    "embeddings; re-running on the same OUT restores the experiment.")
    _common(tune_cmd)
    tune_cmd.add_argument("--num-samples", type=int, default=None,
                          help="trials (default: tune.num_samples of the config)")
    tune_cmd.add_argument("--mlflow-uri", default=None,
                          help="MLflow tracking URI (default: sqlite:///OUT/mlflow.db)")
    concat_cmd = sub.add_parser(
        "concat", help="concat-encode-quantize: several models -> decoder -> int8/binary; "
                       "table of nDCG@10 retained vs compression factor",
        description="Embed with every model of `concat.models` (+ `concat.single_models`) in "
                    "one Ray Data pipeline, score each model and their concatenation, train "
                    "the decoder (MRL and/or SMEC schedule), quantise (int8, binary, binary + "
                    "rescoring; calibrated on corpus vectors) and score every level. Writes "
                    "OUT/results.json, results.md, retained_vs_cf.png, compressors/. "
                    "Embeddings already in OUT are reused.")
    _common(concat_cmd)
    concat_cmd.add_argument("--models", nargs="+", default=None, metavar="NAME",
                            help="models to concatenate (default: concat.models of the config)")
    concat_cmd.add_argument("--single-models", nargs="*", default=None, metavar="NAME",
                            help="models scored alone only (default: concat.single_models)")


def _bench_parser(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks that write results.json + PNG + table",
                           description="benchmarks that write results.json + PNG + table")
    bench_sub = bench.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    compression = bench_sub.add_parser(
        "compression", help="every method at D/2..D/16 over seeds (mean ± std)",
        description="Train every method on the same cached embeddings and budget; score "
                    "nDCG@10 at each level over several seeds. Embeds first when --out has "
                    "no embeddings.")
    _common(compression)
    compression.add_argument("--model", default=None,
                             help="model name or local folder (overrides model.name)")
    compression.add_argument("--dims", type=int, nargs="+", default=None,
                             help="target dims (default D/2 D/4 D/8 D/16)")
    compression.add_argument("--seeds", type=int, default=3, help="seeds per method")
    compression.add_argument("--methods", nargs="+", default=None,
                             help="methods to train (default: all)")
    compression.add_argument("--mteb", action="store_true",
                             help="also score raw and every seed-0 level through MTEB "
                                  "(its result JSON under OUT/mteb) and report |MTEB - ours|")
    compression.add_argument("--memory-sizes", type=int, nargs="*", default=[1000, 2000, 5000,
                                                                              10000],
                             help="S-XBM sizes to time and score with SMEC, seed 0 "
                                  "(default 1000 2000 5000 10000; none to skip)")
    compression.add_argument("--supervision", nargs="+", choices=SUPERVISION,
                             default=["qrels"],
                             help="what the methods train on, each in turn (default qrels); "
                                  "none trains only the methods with an unsupervised term")
    compression.add_argument("--transfer-from", type=Path, default=None, metavar="RUN",
                             help="also score the compressors a bench on another dataset saved "
                                  "(RUN/compressors/), on this dataset's test queries")
    compression.add_argument("--quick", action="store_true",
                             help="one seed, 3 epochs per stage, no memory-size sweep: "
                                  "a smoke run, not a result")


def _cluster_parsers(sub) -> None:
    """cluster up/down/status, submit, jobs, and report."""
    cluster = sub.add_parser("cluster", help="start / stop / show a local Ray head for jobs",
                             description="A real Ray head node (`ray start --head`) with the "
                                         "dashboard and Jobs API on 127.0.0.1 and token auth on.")
    cluster_sub = cluster.add_subparsers(dest="cluster", metavar="ACTION", required=True)
    cluster_up = cluster_sub.add_parser("up", help="start a head node",
                                        description="start a head node")
    cluster_up.add_argument("--num-cpus", type=int, default=None, help="default: all cores")
    cluster_up.add_argument("--object-store-gib", type=float, default=2.0)
    cluster_up.add_argument("--port", type=int, default=6379, help="GCS port")
    cluster_up.add_argument("--dashboard-port", type=int, default=8265)
    cluster_sub.add_parser("down", help="stop the head node `smec cluster up` started (only it)",
                           description="stop only what `smec cluster up` started")
    cluster_sub.add_parser("status", help="show the head node smec started",
                           description="show the head node smec started")
    submit = sub.add_parser(
        "submit", help="run any smec command as a Ray job: smec submit -- smec demo ...",
        description="Submit a command as a Ray job (Jobs SDK), print its id, stream its logs and "
                    "exit with its status. Relative paths in the command resolve against this "
                    "folder. Example: smec submit -- smec demo --out runs/demo")
    submit.add_argument("--address", default=None,
                        help="Jobs API URL (default: the head `smec cluster up` started)")
    submit.add_argument("--no-wait", action="store_true", help="print the job id and return")
    submit.add_argument("--working-dir", type=Path, default=None,
                        help="code folder to upload (default: the smec checkout, if any)")
    submit.add_argument("entrypoint", nargs=argparse.REMAINDER,
                        help="-- then the command to run")
    jobs = sub.add_parser("jobs", help="list the cluster's jobs", description="list jobs")
    jobs.add_argument("--address", default=None)
    report = sub.add_parser("report", help="print the table and redraw the plot of a "
                            "results.json", description="print the table and redraw the plot")
    report.add_argument("results", type=Path, help="a results.json file")


def caller_dir() -> Path:
    """The folder relative paths mean: the caller's working directory, or under `smec submit`
    the submitter's (``SMEC_SUBMIT_CWD``), never the job's copy of the code."""
    return Path(os.environ.get("SMEC_SUBMIT_CWD") or Path.cwd()).absolute()


def absolute_paths(args: argparse.Namespace) -> argparse.Namespace:
    """Every path option made absolute against :func:`caller_dir`, once, before anything runs:
    Ray's workers, tasks and actors run in working directories of their own, where a relative
    run folder names nothing (or another folder)."""
    base = caller_dir()
    for name, value in vars(args).items():
        if isinstance(value, Path):
            setattr(args, name, base / value)
        elif isinstance(value, list) and value and all(isinstance(v, Path) for v in value):
            setattr(args, name, [base / v for v in value])
    uri = getattr(args, "mlflow_uri", None)   # Tune trials log to it from their own folders
    if uri and uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_absolute():
        args.mlflow_uri = f"sqlite:///{base / uri[len('sqlite:///'):]}"
    elif uri and "://" not in uri and not uri.startswith("file:"):
        args.mlflow_uri = str(base / uri)   # a plain folder
    return args


def _beside(folder: Path, name: str) -> Path:
    """``FOLDER.name`` next to a folder a job may clear and rewrite (a store, codes)."""
    return folder.with_name(f"{folder.name}.{name}")


def _compressor_dir(path: Path) -> Path:
    """A run folder means its compressor/; a compressor folder is itself."""
    from smec.runfolder import RunFolder
    run = RunFolder(path)
    return run.compressor if not (path / "compressor.json").is_file() \
        and run.compressor.is_dir() else path


def _compress(args: argparse.Namespace) -> int:
    """`smec compress`: a compressor over a store or a corpus file -> a codes folder."""
    from smec.config import load_config
    from smec.corpus import DEFAULT_ID_FIELDS, Source
    from smec.pipelines.compress import plan_corpus, plan_store, run_compress
    cfg = load_config(args.config)
    _options(cfg, "compress", {"num_gpus_per_actor": ("--num-gpus", args.num_gpus),
                               "num_actors": ("--num-actors", args.num_actors),
                               "calibration_rows": ("--calibration-rows",
                                                    args.calibration_rows)})
    compressor = _compressor_dir(args.compressor)
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
    with ray_output(_beside(args.out, RAY_LOG), args.verbose):
        summary = run_compress(job, resume=args.resume, progress=interactive)
    line = _embed_line(summary, args.out).replace("embedded", "compressed").replace(
        "docs/s", "vectors/s")
    echo(f"{line} ({args.dims} d {args.precision})")
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


def _evaluate_run(args: argparse.Namespace) -> int:
    """`smec evaluate --run RUN.tsv`: a TREC run scored with the metric code of everything else."""
    from smec.config import load_config
    from smec.data import resolve_beir_dir
    from smec.eval import evaluate_run
    from smec.runfile import read_trec_run
    cfg = load_config(args.config)
    paths = resolve_beir_dir(args.data_dir, cfg.data.train_split,
                             cfg.data.test_split, cfg.data.split_test_frac)
    run = read_trec_run(args.run)
    try:
        scores = evaluate_run(run, paths.read_test_qrels())
    except ValueError as exc:
        raise SmecError(f"--run {args.run}: {exc} ({paths.test_qrels})") from None
    echo(f"{args.run} on {paths.name} ({paths.split_label}): nDCG@10 "
         f"{scores['ndcg_at_10']:.4f}, recall@100 {scores['recall_at_100']:.4f}")
    return 0


def _validated(update, section, changes: dict, options: dict[str, str]):
    """``update(section, **changes)``; a validation error is one line naming the option
    (``options``: config key -> the flag that set it)."""
    from pydantic import ValidationError
    try:
        return update(section, **changes)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0])
        raise SmecError(f"{options.get(key, key)}: {error['msg']}") from None


def _train_store(args: argparse.Namespace) -> int:
    """`smec train --store STORE --out OUT --supervision none`: a corpus-only run."""
    from smec.config import load_config
    from smec.pipelines.train import run_train
    if args.data_dir is not None:
        raise SmecError("pass either --store STORE or --data-dir DIR, not both")
    if args.out is None:
        raise SmecError("--store needs --out DIR (the run folder the compressor goes to)")
    cfg = load_config(args.config)
    _options(cfg, "train", {"supervision": ("--supervision", args.supervision or "none")})
    args.out.mkdir(parents=True, exist_ok=True)
    from smec.pipelines.runtime import ray_output
    from smec.runfolder import RunFolder
    with ray_output(RunFolder(args.out).ray_log, args.verbose):
        trained = run_train(None, args.out, cfg, resume=args.resume,
                            mlflow_uri=args.mlflow_uri, store=args.store)
    echo(f"trained stages {trained['stages']} ({trained['supervision']}) into "
         f"{args.out / 'compressor'}")
    return 0


def _export(args: argparse.Namespace) -> int:
    """`smec export`: the query encoder as a sentence-transformers folder."""
    from smec.export import export_model
    info = export_model(_compressor_dir(args.run_dir), args.out_dir, dim=args.dims,
                        precision=args.precision, codes=args.codes)
    custom = "" if info["builtin_only"] else "; load it with trust_remote_code=True"
    echo(f"exported {info['models']} + {info['compressor_kind']} at {info['dim']} d "
         f"({info['precision']}) to {args.out_dir}{custom}")
    return 0


def _prepare(args: argparse.Namespace):
    from smec.config import load_config
    from smec.data import check_inputs, resolve_beir_dir
    cfg = load_config(args.config)
    paths = resolve_beir_dir(args.data_dir, cfg.data.train_split, cfg.data.test_split,
                             cfg.data.split_test_frac)
    for warning in check_inputs(paths):   # every file and id, before Ray or a model starts
        print(f"smec: warning: {warning}", file=sys.stderr)
    out = args.out if args.out is not None else caller_dir() / "runs" / paths.name
    if out.exists() and not out.is_dir():
        raise SmecError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return cfg, paths, out


def _print_results(results: dict, out: Path) -> None:
    from smec.report import markdown_table
    echo()
    echo(markdown_table(results))
    echo()
    echo("timings (s): " + ", ".join(f"{k} {v}" for k, v in results["timings_s"].items()))
    if results.get("recipe_summary"):
        echo(results["recipe_summary"])
    echo(f"results: {out / 'results.json'}  plot: {out / 'ndcg_vs_bytes.png'}")


def _options(cfg, section: str, given: dict[str, tuple[str, object]]) -> None:
    """The one way command-line options change the config: ``given`` maps a key of
    ``cfg.<section>`` to (the flag, its value); flags left unset (``None``) change nothing, and
    the section is validated like a config file, an invalid value one line naming the flag."""
    from smec.config import updated
    changes = {key: value for key, (_, value) in given.items() if value is not None}
    if changes:
        setattr(cfg, section, _validated(updated, getattr(cfg, section), changes,
                                         {key: flag for key, (flag, _) in given.items()}))


def _config(args: argparse.Namespace) -> int:
    from smec.config import default_config_path
    sys.stdout.write(default_config_path().read_text())
    return 0


def _report(args: argparse.Namespace) -> int:
    from smec.report import markdown_table, plot_ndcg_vs_bytes
    from smec.results import read_results
    results = read_results(args.results)
    echo(markdown_table(results))
    echo(f"plot: {plot_ndcg_vs_bytes(results, args.results.with_suffix('.png'))}")
    return 0


def _cluster(args: argparse.Namespace) -> int:
    from smec.cluster import head
    if args.cluster == "up":
        state = head.up(args.num_cpus, args.object_store_gib, args.port, args.dashboard_port)
        echo(f"Ray head started: address {state['address']}, dashboard/Jobs API "
             f"{state['dashboard']} (token auth on). Stop it with `smec cluster down`.")
    elif args.cluster == "down":
        echo(f"stopped {head.down()} processes of the smec-started head")
    else:
        state = head.status()
        echo("no cluster started by smec" if state is None else
             f"{'running' if state['running'] else 'not running'}: {state['dashboard']} "
             f"(since {state['started_at']})")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from smec.cluster.jobs import submit
    entrypoint = args.entrypoint[1:] if args.entrypoint[:1] == ["--"] else args.entrypoint
    return submit(entrypoint, args.address, not args.no_wait, args.working_dir)


def _jobs(args: argparse.Namespace) -> int:
    from smec.cluster.jobs import list_jobs
    for job in list_jobs(args.address):
        echo(f"{job['id']}\t{job['status']}\t{job['entrypoint']}")
    return 0


def _index(args: argparse.Namespace) -> int:
    from smec.index import build_index
    manifest = build_index(args.codes, args.out, args.kind, args.hnsw_m, args.encoder,
                           args.rescore_codes, args.nlist)
    echo(f"indexed {manifest['count']} {manifest['precision']} codes of {manifest['dim']} d "
         f"({args.kind}, {manifest['index_bytes'] / 1e6:.1f} MB) into {args.out}")
    return 0


def _bench(args: argparse.Namespace, cfg, paths, out: Path, interactive: bool) -> int:
    from smec.pipelines.bench import (
        DEFAULT_METHODS,
        check_methods,
        run_compression_bench,
    )
    from smec.runfolder import RunFolder
    _options(cfg, "model", {"name": ("--model", args.model)})
    _options(cfg, "train", {"max_epochs_per_stage": ("--quick", 3 if args.quick else None)})
    seeds, memory = (1, []) if args.quick else (args.seeds, args.memory_sizes)
    if seeds < 1:
        raise SmecError(f"--seeds must be >= 1, got {seeds}")
    methods = check_methods(args.methods or DEFAULT_METHODS)
    transfer = args.transfer_from
    if transfer is not None and not RunFolder(transfer).compressors.is_dir():
        raise SmecError(f"--transfer-from {transfer}: no compressors/ folder; run `smec "
                        "bench compression` on the source dataset first")
    results = run_compression_bench(paths, out, cfg, methods, args.dims, seeds, args.mteb,
                                    memory, supervision=args.supervision,
                                    transfer_from=transfer)
    _print_results(results, out)
    return 0


def _demo(args: argparse.Namespace, cfg, paths, out: Path, interactive: bool) -> int:
    from smec.pipelines.demo import run_demo
    _options(cfg, "train", {"supervision": ("--supervision", args.supervision)})
    live = progress_stream() if interactive else None
    _print_results(run_demo(paths, out, cfg, mlflow_uri=args.mlflow_uri, live=live), out)
    echo(f"output folder: {out.resolve()}")
    return 0


def _embed(args: argparse.Namespace, cfg, paths, out: Path, interactive: bool) -> int:
    from smec.pipelines.embed import run_embed
    from smec.pipelines.evaluate import record_timing
    from smec.runfolder import RunFolder
    _options(cfg, "model", {"name": ("--model", args.model)})
    start = time.perf_counter()
    summary = run_embed(paths, out, cfg, resume=args.resume, on_bad_row=args.on_bad_row,
                        progress=interactive)
    record_timing(out, "embed", time.perf_counter() - start)
    run = RunFolder(out)
    for kind, store in (("corpus", run.corpus), ("queries", run.queries)):
        echo(f"{kind}: {_embed_line(summary[kind], store)}")
    return 0


def _train(args: argparse.Namespace, cfg, paths, out: Path, interactive: bool) -> int:
    from smec.pipelines.evaluate import record_timing
    from smec.pipelines.train import run_train
    from smec.runfolder import RunFolder
    _options(cfg, "train", {"supervision": ("--supervision", args.supervision)})
    start = time.perf_counter()
    trained = run_train(paths, out, cfg, resume=args.resume, mlflow_uri=args.mlflow_uri,
                        live=progress_stream() if interactive else None)
    record_timing(out, "train", time.perf_counter() - start)
    echo(f"trained stages {trained['stages']} ({trained['supervision']}) into "
         f"{RunFolder(out).compressor}")
    echo(f"MLflow run {trained['mlflow_run_id']} in {trained['mlflow_uri']}")
    return 0


def _tune(args: argparse.Namespace, cfg, paths, out: Path, interactive: bool) -> int:
    from smec.runfolder import RunFolder
    from smec.tune.run import run_tune
    summary = run_tune(paths, out, cfg, args.num_samples, args.mlflow_uri)
    scores = summary["test_ndcg_at_10_at_target"]
    echo(f"best config: {summary['best_config']} ({len(summary['trials'])} trials)")
    echo(f"test nDCG@10 at {summary['target_dim']} d: best {scores['best']}, "
         f"default {scores['default']}")
    echo(f"results: {RunFolder(out).results}  MLflow: {summary['mlflow_uri']}")
    return 0


def _concat(args: argparse.Namespace, cfg, paths, out: Path, interactive: bool) -> int:
    from smec.pipelines.concat import run_concat
    from smec.report import concat_table
    from smec.runfolder import RunFolder
    _options(cfg, "concat", {"models": ("--models", args.models),
                             "single_models": ("--single-models", args.single_models)})
    results = run_concat(paths, out, cfg)
    echo()
    echo(concat_table(results))
    echo()
    for name, target in results["targets"].items():
        echo(f"target {name}: {target}")
    echo(f"results: {RunFolder(out).results}  plot: {out / 'retained_vs_cf.png'}")
    return 0


def _evaluate(args: argparse.Namespace, cfg, paths, out: Path, interactive: bool) -> int:
    from smec.pipelines.evaluate import run_evaluate
    other = args.compressor
    _print_results(run_evaluate(paths, out, cfg, _compressor_dir(other) if other else None),
                   out)
    return 0


#: commands that need no data folder
STANDALONE = {"config": _config, "report": _report, "cluster": _cluster, "submit": _submit,
              "jobs": _jobs, "compress": _compress, "index": _index, "search": _search,
              "plan": _plan, "export": _export}
#: commands on a BEIR folder and a run folder: the inputs are checked first, and Ray's output
#: goes to the run folder's ray.log
ON_A_RUN_FOLDER = {"demo": _demo, "embed": _embed, "train": _train, "evaluate": _evaluate,
                   "tune": _tune, "concat": _concat, "bench": _bench}


def run(argv: list[str] | None = None) -> int:
    args = absolute_paths(build_parser().parse_args(argv))
    if args.command in STANDALONE:
        return STANDALONE[args.command](args)
    if args.command == "evaluate" and args.run is not None:
        return _evaluate_run(args)
    if args.command == "embed" and args.corpus is not None:
        return _embed_file(args)
    if args.command == "train" and args.store is not None:
        return _train_store(args)
    cfg, paths, out = _prepare(args)
    interactive = sys.stderr.isatty()   # before Ray's output is pointed at the log
    from smec.pipelines.runtime import ray_output
    from smec.runfolder import RunFolder
    with ray_output(RunFolder(out).ray_log, args.verbose or args.command == "evaluate"):
        return ON_A_RUN_FOLDER[args.command](args, cfg, paths, out, interactive)


def main(argv: list[str] | None = None) -> None:
    # Models are local folders; never let a library try the hub (it cannot be reached).
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")
    # Progress reaches a log file (nohup, a submitted job) line by line, not in 8 KB blocks.
    sys.stdout.reconfigure(line_buffering=True)
    try:
        code = run(argv)
    except SmecError as exc:
        print(f"smec: error: {exc}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        print("smec: interrupted", file=sys.stderr)
        code = 130
    except Exception as exc:  # a bug: still one line, the traceback on request
        if os.environ.get("SMEC_DEBUG"):
            raise
        print(f"smec: error: {type(exc).__name__}: {exc} (set SMEC_DEBUG=1 for the traceback)",
              file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
