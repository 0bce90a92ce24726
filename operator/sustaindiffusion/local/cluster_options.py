"""The command-line options of every command that reads a cluster: the namespace and the
kubeconfig, with one default and one help text."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_cluster_options(parser: argparse.ArgumentParser, namespace_help: str) -> None:
    parser.add_argument("--namespace", default="default", help=namespace_help)
    parser.add_argument("--kubeconfig", type=Path, default=None, help="kubeconfig (default: $KUBECONFIG)")
