"""The ``raftkv`` command line: the project's only composition root (docs/decisions.md §2)."""

from __future__ import annotations

import click
from raftkv_cli.bench import bench_group
from raftkv_cli.cluster import cluster_group
from raftkv_cli.ctl import COMMANDS as CTL_COMMANDS
from raftkv_cli.node import node_command
from raftkv_cli.snapshot import snapshot_group

import raftkv


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    raftkv.__version__, "--version", prog_name="raftkv", message="%(prog)s %(version)s"
)
def main() -> None:
    """raftkv: an etcd-compatible, Raft-replicated key-value store."""


main.add_command(node_command)
main.add_command(cluster_group)
main.add_command(bench_group)
main.add_command(snapshot_group)
for _command in CTL_COMMANDS:
    main.add_command(_command)
