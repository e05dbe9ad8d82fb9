"""The ``raftkv`` command line: the composition root of the project (design.md §3.3, layer L5)."""

from __future__ import annotations

import sys

import click
from raftkv_cli.node import node_command

import raftkv


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    raftkv.__version__, "--version", prog_name="raftkv", message="%(prog)s %(version)s"
)
def main() -> None:
    """raftkv: an etcd-compatible, Raft-replicated key-value store."""


main.add_command(node_command)


@main.group()
def cluster() -> None:
    """Run a local cluster for development."""


@cluster.command()
def up() -> None:
    """Start a local three-node cluster on 127.0.0.1 (not available yet)."""
    click.echo(
        "raftkv cluster up: not implemented yet; "
        "the local three-node cluster arrives with issue 4.",
        err=True,
    )
    sys.exit(1)
