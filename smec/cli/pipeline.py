"""demo, embed, train, evaluate: the run-folder pipeline on a BEIR folder (and its variants on
one file: ``embed --corpus``, ``train --store``, ``evaluate --run``). The Ray jobs are imported
inside the handlers, so ``smec --help`` starts no Ray."""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from smec.cli.common import (
    SUPERVISION,
    TEACHER_HELP,
    beside,
    common_options,
    compressor_dir,
    embed_line,
    print_results,
    set_options,
)
from smec.console import RAY_LOG, echo, progress_stream
from smec.errors import SmecError

if TYPE_CHECKING:   # imported where used: `smec --help` stays light (no torch)
    from smec.runfolder import RunFolder


def add_parsers(sub) -> None:
    """demo, embed, train, evaluate: on a BEIR folder and a run folder."""
    for name, help_text in [
        ("demo", "embed, train and evaluate in a row; prints the table"),
        ("embed", "embed corpus and queries with Ray Data into Parquet"),
        ("train", "train the compressor (SMEC by default) with Ray Train on the embeddings"),
        ("evaluate", "nDCG@10 of raw, truncation, PCA and the trained compressor; "
                     "results.json + plot"),
    ]:
        command = sub.add_parser(name, help=help_text, description=help_text)
        common_options(command)
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
            command.add_argument("--teacher", default=None, metavar="TEACHER",
                                 help=TEACHER_HELP)
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
    set_options(cfg, "model", {"name": ("--model", args.model)})
    source = Source(args.corpus, (args.id_field,) if args.id_field else DEFAULT_ID_FIELDS,
                    args.text_field)
    from smec.pipelines.runtime import ray_output
    interactive = sys.stderr.isatty()
    with ray_output(beside(args.out, RAY_LOG), args.verbose):
        summary = run_embed_corpus(source, args.out, cfg, resume=args.resume,
                                   on_bad_row=args.on_bad_row, progress=interactive)
    echo(embed_line(summary, args.out))
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


def _train_store(args: argparse.Namespace) -> int:
    """`smec train --store STORE --out OUT --supervision none`: a corpus-only run."""
    from smec.config import load_config
    from smec.pipelines.train import run_train
    if args.data_dir is not None:
        raise SmecError("pass either --store STORE or --data-dir DIR, not both")
    if args.out is None:
        raise SmecError("--store needs --out DIR (the run folder the compressor goes to)")
    cfg = load_config(args.config)
    set_options(cfg, "train", {"supervision": ("--supervision", args.supervision or "none"),
                               "teacher": ("--teacher", args.teacher)})
    args.out.mkdir(parents=True, exist_ok=True)
    from smec.pipelines.runtime import ray_output
    from smec.runfolder import RunFolder
    run = RunFolder(args.out)
    with ray_output(run.ray_log, args.verbose):
        trained = run_train(None, run, cfg, resume=args.resume,
                            mlflow_uri=args.mlflow_uri, store=args.store)
    echo(f"trained stages {trained['stages']} ({trained['supervision']}) into "
         f"{run.compressor}")
    return 0


def _demo(args: argparse.Namespace, cfg, paths, run: RunFolder, interactive: bool) -> int:
    from smec.pipelines.demo import run_demo
    set_options(cfg, "train", {"supervision": ("--supervision", args.supervision),
                               "teacher": ("--teacher", args.teacher)})
    live = progress_stream() if interactive else None
    print_results(run_demo(paths, run, cfg, mlflow_uri=args.mlflow_uri, live=live), run)
    echo(f"output folder: {run.root}")
    return 0


def _embed(args: argparse.Namespace, cfg, paths, run: RunFolder, interactive: bool) -> int:
    from smec.pipelines.embed import run_embed
    from smec.pipelines.evaluate import record_timing
    set_options(cfg, "model", {"name": ("--model", args.model)})
    start = time.perf_counter()
    summary = run_embed(paths, run, cfg, resume=args.resume, on_bad_row=args.on_bad_row,
                        progress=interactive)
    record_timing(run, "embed", time.perf_counter() - start)
    for kind, store in (("corpus", run.corpus), ("queries", run.queries)):
        echo(f"{kind}: {embed_line(summary[kind], store)}")
    return 0


def _train(args: argparse.Namespace, cfg, paths, run: RunFolder, interactive: bool) -> int:
    from smec.pipelines.evaluate import record_timing
    from smec.pipelines.train import run_train
    set_options(cfg, "train", {"supervision": ("--supervision", args.supervision),
                               "teacher": ("--teacher", args.teacher)})
    start = time.perf_counter()
    trained = run_train(paths, run, cfg, resume=args.resume, mlflow_uri=args.mlflow_uri,
                        live=progress_stream() if interactive else None)
    record_timing(run, "train", time.perf_counter() - start)
    echo(f"trained stages {trained['stages']} ({trained['supervision']}) into "
         f"{run.compressor}")
    echo(f"MLflow run {trained['mlflow_run_id']} in {trained['mlflow_uri']}")
    return 0


def _evaluate(args: argparse.Namespace, cfg, paths, run: RunFolder, interactive: bool) -> int:
    from smec.pipelines.evaluate import run_evaluate
    other = args.compressor
    print_results(run_evaluate(paths, run, cfg, compressor_dir(other) if other else None),
                  run)
    return 0



def on_one_file(args: argparse.Namespace) -> Callable[[argparse.Namespace], int] | None:
    """The handler of a pipeline command run on one file instead of a BEIR folder, if it is."""
    if args.command == "evaluate" and args.run is not None:
        return _evaluate_run
    if args.command == "embed" and args.corpus is not None:
        return _embed_file
    if args.command == "train" and args.store is not None:
        return _train_store
    return None


COMMANDS = {"demo": _demo, "embed": _embed, "train": _train, "evaluate": _evaluate}
