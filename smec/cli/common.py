"""What every command shares: the run-folder options, paths made absolute once, config
overrides from flags (validated, one line naming the flag), and the result lines."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from smec.console import RAY_LOG, echo
from smec.errors import SmecError

if TYPE_CHECKING:
    from smec.runfolder import RunFolder

SUPERVISION = ("qrels", "pseudo", "none")
TEACHER_HELP = ("whose similarities the unsupervised term distils: self, concat (the "
                "concatenation of concat.models; the corpus is embedded with them once, into "
                "OUT/teacher/concat) or a registry model / local model folder (default: train.teacher)")


def common_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/); "
                             "default: the bundled SciFact-mini")
    parser.add_argument("--out", type=Path, default=None,
                        help="run folder (default: runs/<dataset name>)")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML config (default: the bundled one; see `smec config`)")
    verbose_option(parser)


def verbose_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true",
                        help=f"show Ray's own output live (default: only smec's progress; "
                             f"Ray's goes to {RAY_LOG} in the output folder)")


def precision_arg(value: str) -> str:
    from smec.results import check_precision
    try:
        return check_precision(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


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


def beside(folder: Path, name: str) -> Path:
    """``FOLDER.name`` next to a folder a job may clear and rewrite (a store, codes)."""
    return folder.with_name(f"{folder.name}.{name}")


def compressor_dir(path: Path) -> Path:
    """A run folder means its compressor/; a compressor folder is itself."""
    from smec.runfolder import RunFolder
    run = RunFolder(path)
    return run.compressor if not (path / "compressor.json").is_file() \
        and run.compressor.is_dir() else path


def validated(update, section, changes: dict, options: dict[str, str]):
    """``update(section, **changes)``; a validation error is one line naming the option
    (``options``: config key -> the flag that set it)."""
    from pydantic import ValidationError
    try:
        return update(section, **changes)
    except ValidationError as exc:
        error = exc.errors()[0]
        message = error["msg"].removeprefix("Value error, ")
        if not error["loc"]:   # a check across keys: its message names them
            raise SmecError(message) from None
        key = str(error["loc"][0])
        raise SmecError(f"{options.get(key, key)}: {message}") from None


def set_options(cfg, section: str, given: dict[str, tuple[str, object]]) -> None:
    """The one way command-line options change the config: ``given`` maps a key of
    ``cfg.<section>`` to (the flag, its value); flags left unset (``None``) change nothing, and
    the section is validated like a config file, an invalid value one line naming the flag."""
    from smec.config import updated
    changes = {key: value for key, (_, value) in given.items() if value is not None}
    if changes:
        setattr(cfg, section, validated(updated, getattr(cfg, section), changes,
                                         {key: flag for key, (flag, _) in given.items()}))


def prepare_run(args: argparse.Namespace) -> tuple:
    """(the validated config, the BEIR folder's paths, the run folder, made): everything a
    command on a run folder needs, its inputs checked before Ray or a model starts."""
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
    from smec.runfolder import RunFolder
    return cfg, paths, RunFolder(out)


def print_results(results: dict, run: RunFolder) -> None:
    from smec.report import markdown_table
    echo()
    echo(markdown_table(results))
    echo()
    echo("timings (s): " + ", ".join(f"{k} {v}" for k, v in results["timings_s"].items()))
    if results.get("recipe_summary"):
        echo(results["recipe_summary"])
    echo(f"results: {run.results}  plot: {run.plot}")


def embed_line(summary: dict, where: Path) -> str:
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
