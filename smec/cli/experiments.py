"""tune, concat, bench: experiments on a BEIR folder and a run folder (Ray Tune, the
concat-encode-quantize pipeline, the compression benchmark)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from smec.cli.common import (
    SUPERVISION,
    TEACHER_HELP,
    common_options,
    print_results,
    set_options,
)
from smec.console import echo
from smec.errors import SmecError

if TYPE_CHECKING:   # imported where used: `smec --help` stays light (no torch)
    from smec.runfolder import RunFolder


def add_parsers(sub) -> None:
    """tune, concat and bench compression: experiments on a BEIR folder and a run folder."""
    tune_cmd = sub.add_parser(
        "tune", help="Ray Tune search over the train settings (ASHA, MLflow); best config + "
                     "its test results",
        description="Search the `tune.space` of the config with Ray Tune (ASHA on the hold-out "
                    "of train queries), log every trial to MLflow, write OUT/best_config.yaml "
                    "and evaluate the best model once on test. Embeds first when OUT has no "
                    "embeddings; re-running on the same OUT restores the experiment.")
    common_options(tune_cmd)
    tune_cmd.add_argument("--num-samples", type=int, default=None,
                          help="trials (default: tune.num_samples of the config)")
    tune_cmd.add_argument("--mlflow-uri", default=None,
                          help="MLflow tracking URI (default: sqlite:///OUT/mlflow.db)")
    tune_cmd.add_argument("--cv", action="append", default=None,
                          metavar="DATA_DIR:RUN_DIR[:TRAIN_SPLIT]",
                          help="choose defaults by grouped 2-fold cross-validation on the "
                               "training queries of each dataset given (repeat; RUN_DIR holds "
                               "its embeddings; TRAIN_SPLIT split-test trains on a hashed half "
                               "of the test queries and never reads the other): one trial per "
                               "setting, ASHA over its units, scored by the gain over the "
                               "untrained start at 96/48/24 d, a loss on any dataset refused; "
                               "writes OUT/selection.json, selection.md, best_config.yaml. "
                               "Test qrels are not read. --data-dir is not used")
    concat_cmd = sub.add_parser(
        "concat", help="concat-encode-quantize: several models -> decoder -> int8/binary; "
                       "table of nDCG@10 retained vs compression factor",
        description="Embed with every model of `concat.models` (+ `concat.single_models`) in "
                    "one Ray Data pipeline, score each model and their concatenation, train "
                    "the decoder (MRL and/or SMEC schedule), quantise (int8, binary, binary + "
                    "rescoring; calibrated on corpus vectors) and score every level. Writes "
                    "OUT/results.json, results.md, retained_vs_cf.png, compressors/. "
                    "Embeddings already in OUT are reused.")
    common_options(concat_cmd)
    concat_cmd.add_argument("--models", nargs="+", default=None, metavar="NAME",
                            help="models to concatenate (default: concat.models of the config)")
    concat_cmd.add_argument("--supervision", choices=SUPERVISION, default=None,
                            help="what the decoder trains on: qrels (the training qrels), "
                                 "pseudo (pairs mined from the corpus) or none (the "
                                 "concatenation's own similarities; default: "
                                 "concat.supervision)")
    concat_cmd.add_argument("--single-models", nargs="*", default=None, metavar="NAME",
                            help="models scored alone only (default: concat.single_models)")
    _bench_parser(sub)


def _bench_parser(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks that write results.json + PNG + table",
                           description="benchmarks that write results.json + PNG + table")
    bench_sub = bench.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    compression = bench_sub.add_parser(
        "compression", help="every method at D/2..D/16 over seeds (mean ± std)",
        description="Train every method on the same cached embeddings and budget; score "
                    "nDCG@10 at each level over several seeds. Embeds first when --out has "
                    "no embeddings.")
    common_options(compression)
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
                                  "(default 1000 2000 5000 10000; the flag with no sizes "
                                  "skips the sweep)")
    compression.add_argument("--supervision", nargs="+", choices=SUPERVISION,
                             default=["qrels"],
                             help="what the methods train on, each in turn (default qrels); "
                                  "none trains only the methods with an unsupervised term")
    compression.add_argument("--teachers", nargs="+", default=None, metavar="TEACHER",
                             help="train every method with each of these teachers in turn, "
                                  "rows labelled METHOD+TEACHER (default: train.teacher). A "
                                  "teacher: " + TEACHER_HELP)
    compression.add_argument("--transfer-from", type=Path, default=None, metavar="RUN",
                             help="also score the compressors a bench on another dataset saved "
                                  "(RUN/compressors/), on this dataset's test queries")
    compression.add_argument("--quick", action="store_true",
                             help="one seed, 3 epochs per stage, no memory-size sweep: "
                                  "a smoke run, not a result")


def _tune(args: argparse.Namespace, cfg, paths, run: RunFolder, interactive: bool) -> int:
    if args.cv:
        return _select(args, cfg, run)
    from smec.tune.run import run_tune
    summary = run_tune(paths, run, cfg, args.num_samples, args.mlflow_uri)
    scores = summary["test_ndcg_at_10_at_target"]
    echo(f"best config: {summary['best_config']} ({len(summary['trials'])} trials)")
    echo(f"test nDCG@10 at {summary['target_dim']} d: best {scores['best']}, "
         f"default {scores['default']}")
    echo(f"results: {run.results}  MLflow: {summary['mlflow_uri']}")
    return 0


def _select(args: argparse.Namespace, cfg, run: RunFolder) -> int:
    from smec.tune.select import run_selection
    if args.out is None:
        raise SmecError("smec tune --cv: give --out DIR (the search's folder)")
    summary = run_selection(args.cv, run, cfg, args.num_samples, args.mlflow_uri)
    pick = next(iter(summary["picks"].values()))
    echo(f"chosen for {pick['method']}: {pick['chosen'] or 'its current defaults'} "
         f"(cross-validated gain over the start {pick['chosen_score']:+.4f}; best "
         f"{pick['best'] or 'current defaults'} {pick['best_score']:+.4f}; "
         f"{summary['trials']} trials)")
    echo(f"selection: {run.selection_table}  config: {run.best_config}  "
         f"MLflow: {summary['mlflow_uri']}")
    return 0


def _concat(args: argparse.Namespace, cfg, paths, run: RunFolder, interactive: bool) -> int:
    from smec.pipelines.concat import run_concat
    from smec.report import concat_table
    set_options(cfg, "concat", {"models": ("--models", args.models),
                             "single_models": ("--single-models", args.single_models),
                             "supervision": ("--supervision", args.supervision)})
    results = run_concat(paths, run, cfg)
    echo()
    echo(concat_table(results))
    echo()
    for name, target in results["targets"].items():
        echo(f"target {name}: {target}")
    echo(f"results: {run.results}  plot: {run.concat_plot}")
    return 0


def _bench(args: argparse.Namespace, cfg, paths, run: RunFolder, interactive: bool) -> int:
    from smec.pipelines.bench import (
        DEFAULT_METHODS,
        check_methods,
        run_compression_bench,
    )
    from smec.runfolder import RunFolder
    set_options(cfg, "model", {"name": ("--model", args.model)})
    set_options(cfg, "train", {"max_epochs_per_stage": ("--quick", 3 if args.quick else None)})
    default_teacher = cfg.train.teacher
    for teacher in args.teachers or []:   # each validated as train.teacher is
        set_options(cfg, "train", {"teacher": ("--teachers", teacher)})
    set_options(cfg, "train", {"teacher": ("--teachers", default_teacher)})
    seeds, memory = (1, []) if args.quick else (args.seeds, args.memory_sizes)
    if seeds < 1:
        raise SmecError(f"--seeds must be >= 1, got {seeds}")
    methods = check_methods(args.methods or DEFAULT_METHODS)
    transfer = None if args.transfer_from is None else RunFolder(args.transfer_from)
    if transfer is not None and not transfer.compressors.is_dir():
        raise SmecError(f"--transfer-from {args.transfer_from}: no compressors/ folder; run `smec "
                        "bench compression` on the source dataset first")
    results = run_compression_bench(paths, run, cfg, methods, args.dims, seeds, args.mteb,
                                    memory, supervision=args.supervision,
                                    transfer_from=transfer, teachers=args.teachers)
    print_results(results, run)
    return 0



COMMANDS = {"tune": _tune, "concat": _concat, "bench": _bench}
