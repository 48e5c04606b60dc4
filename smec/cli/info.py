"""config, report: print the default config; print a results.json's table, redraw its plot."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from smec.console import echo


def add_parsers(sub) -> None:
    sub.add_parser("config", help="print the default config (YAML) to start your own from",
                   description="print the default config (YAML) to start your own from")
    report = sub.add_parser("report", help="print the table and redraw the plot of a "
                            "results.json", description="print the table and redraw the plot")
    report.add_argument("results", type=Path, help="a results.json file")

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



COMMANDS = {"config": _config, "report": _report}
