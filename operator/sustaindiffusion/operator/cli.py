"""The operator's command line (`sustaindiffusion-operator`, or `python -m sustaindiffusion.operator`).

    sustaindiffusion-operator [--namespace NS ... | --all-namespaces] [--metrics-port 8080]
                              [--health-port 8081]

It watches SustainSearch resources (and the worker Jobs and pods it creates), serves Prometheus
metrics on /metrics and a liveness probe on /healthz. Kubernetes credentials come from the pod's
service account, or from the kubeconfig ($KUBECONFIG) outside a cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import kopf

import sustaindiffusion.operator.handlers  # noqa: F401 - registers the handlers
from sustaindiffusion.operator.handlers import RUNTIME
from sustaindiffusion.operator.metrics import serve_metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sustaindiffusion-operator",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--namespace", action="append", default=None, help="watch this namespace (repeatable)")
    scope.add_argument("--all-namespaces", action="store_true", help="watch every namespace (the default)")
    parser.add_argument("--metrics-port", type=int, default=8080)
    parser.add_argument("--metrics-address", default="0.0.0.0")
    parser.add_argument("--health-port", type=int, default=8081)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # else a line per watch event
    if args.metrics_port:
        serve_metrics(args.metrics_port, RUNTIME.metrics, args.metrics_address)
    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace or [],
            liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
