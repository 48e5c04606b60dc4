"""``smec …``: parse, validate, call the pipelines. Errors end as one line on stderr.

One module per command group, each with its parsers beside its handlers
(``add_parsers(sub)`` and ``COMMANDS``): :mod:`~smec.cli.pipeline` (demo, embed, train,
evaluate), :mod:`~smec.cli.experiments` (tune, concat, bench), :mod:`~smec.cli.deploy`
(compress, export, index, search, plan), :mod:`~smec.cli.remote` (cluster, submit, jobs) and
:mod:`~smec.cli.info` (config, report); :mod:`~smec.cli.common` holds what they share. The Ray
jobs (``smec.pipelines``, ``smec.tune``, ``smec.cluster``) are imported only inside handlers.
"""
from __future__ import annotations

import argparse
import os
import sys

from smec.cli import deploy, experiments, info, pipeline, remote
from smec.cli.common import absolute_paths, prepare_run
from smec.errors import SmecError

DESCRIPTION = """smec — compress retrieval embeddings (SMEC: SMRL + ADS + S-XBM) on Ray.

Every job reads and writes one run folder (--out, default runs/<dataset>):
  embeddings/{corpus,queries}/part-*.parquet   (smec embed)
  compressor/                                   (smec train)
  results.json, results.md, ndcg_vs_bytes.png   (smec evaluate)
`smec demo` runs the three in a row on the bundled SciFact-mini set. Then
`smec compress` writes the corpus codes and `smec export` the query encoder."""

#: commands that need no data folder
STANDALONE = {**deploy.COMMANDS, **remote.COMMANDS, **info.COMMANDS}
#: commands on a BEIR folder and a run folder: the inputs are checked first, and Ray's output
#: goes to the run folder's ray.log
ON_A_RUN_FOLDER = {**pipeline.COMMANDS, **experiments.COMMANDS}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smec", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for group in (pipeline, deploy, experiments, info, remote):
        group.add_parsers(sub)
    return parser


def dispatch(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; its exit status."""
    args = absolute_paths(build_parser().parse_args(argv))
    if args.command in STANDALONE:
        return STANDALONE[args.command](args)
    on_one_file = pipeline.on_one_file(args)
    if on_one_file is not None:
        return on_one_file(args)
    cfg, paths, run = prepare_run(args)
    interactive = sys.stderr.isatty()   # before Ray's output is pointed at the log
    from smec.pipelines.runtime import ray_output
    with ray_output(run.ray_log, args.verbose or args.command == "evaluate"):
        return ON_A_RUN_FOLDER[args.command](args, cfg, paths, run, interactive)


def main(argv: list[str] | None = None) -> None:
    # Models are local folders; never let a library try the hub (it cannot be reached).
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ.setdefault(var, "1")
    # Progress reaches a log file (nohup, a submitted job) line by line, not in 8 KB blocks.
    sys.stdout.reconfigure(line_buffering=True)
    try:
        code = dispatch(argv)
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

