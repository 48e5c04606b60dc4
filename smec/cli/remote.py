"""cluster, submit, jobs: a local Ray head, and any smec command run as a Ray job on it."""
from __future__ import annotations

import argparse
from pathlib import Path

from smec.console import echo


def add_parsers(sub) -> None:
    """cluster up/down/status, submit, jobs."""
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



COMMANDS = {"cluster": _cluster, "submit": _submit, "jobs": _jobs}
