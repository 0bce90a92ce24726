"""The operator's command line (`sustaindiffusion-operator`, or `python -m sustaindiffusion.operator`).

    sustaindiffusion-operator [--namespace NS ... | --all-namespaces] [--metrics-port 8080]
                              [--health-port 8081] [--workers 16] [--resync-seconds 60]
                              [--stuck-after-seconds 300] [--no-leader-election]
                              [--lease-namespace NS] [--lease-name NAME] [--identity ID]
                              [--worker-clusters DIR]

It watches SustainSearch resources (and the worker Jobs and pods it creates), steps them with a
bounded pool of workers while it holds the Lease (one writer among replicas), serves Prometheus
metrics on /metrics and a liveness probe on /healthz (500 while a search step is stuck).
Kubernetes credentials come from the pod's service account, or from the kubeconfig ($KUBECONFIG)
outside a cluster. With MultiKueue, `--worker-clusters DIR` names a kubeconfig per worker cluster,
with which it reads the worker pods MultiKueue placed there (docs/multicluster.md).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

import kopf

import sustaindiffusion.operator.handlers  # noqa: F401 - registers the handlers
from sustaindiffusion.kube.api import READ_TIMEOUT_S
from sustaindiffusion.kube.clusters import WorkerClusters, WorkerClustersError
from sustaindiffusion.operator import leadership
from sustaindiffusion.operator.handlers import RUNTIME, RuntimeSettings
from sustaindiffusion.operator.health import serve_health
from sustaindiffusion.operator.metrics import serve_metrics
from sustaindiffusion.operator.supervisor import RESYNC_SECONDS, STUCK_AFTER_SECONDS, WORKERS

WORKER_CLUSTERS_ENV = "SUSTAINDIFFUSION_WORKER_CLUSTERS"


def _parser() -> argparse.ArgumentParser:
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
    parser.add_argument("--health-port", type=int, default=8081, help="0: no liveness endpoint")
    parser.add_argument("--health-address", default="0.0.0.0")
    parser.add_argument("--workers", type=int, default=WORKERS, help="searches stepped at once")
    parser.add_argument(
        "--api-timeout-seconds",
        type=float,
        default=READ_TIMEOUT_S,
        help="read timeout of each API request (connecting: at most 5 s)",
    )
    parser.add_argument(
        "--resync-seconds",
        type=float,
        default=RESYNC_SECONDS,
        help="step a running search at least this often",
    )
    parser.add_argument(
        "--stuck-after-seconds",
        type=float,
        default=STUCK_AFTER_SECONDS,
        help="a step running longer is abandoned, and reported by the liveness probe",
    )
    parser.add_argument(
        "--no-leader-election",
        action="store_true",
        help="act at once, without holding the Lease (one replica)",
    )
    parser.add_argument(
        "--lease-namespace",
        default=os.environ.get("POD_NAMESPACE", "default"),
        help="namespace of the Lease (default: $POD_NAMESPACE or default)",
    )
    parser.add_argument("--lease-name", default=leadership.LeaseSettings.name)
    parser.add_argument("--lease-duration", type=int, default=leadership.LeaseSettings.duration)
    parser.add_argument(
        "--identity", default="", help="holder identity (default: $POD_NAME, or host and pid)"
    )
    parser.add_argument(
        "--worker-clusters",
        type=Path,
        default=os.environ.get(WORKER_CLUSTERS_ENV) or None,
        help="a directory of kubeconfigs, one per MultiKueue worker cluster (file name: the "
        "MultiKueueCluster's), to read worker pods there; default $" + WORKER_CLUSTERS_ENV,
    )
    parser.add_argument("--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)  # else a line per watch event
        logging.getLogger("leaderelection").setLevel(logging.WARNING)  # else a line per renewal
    lease = None
    if not args.no_leader_election:
        duration = max(3, args.lease_duration)
        lease = leadership.LeaseSettings(
            name=args.lease_name,
            namespace=args.lease_namespace,
            identity=args.identity,
            duration=duration,
            renew_deadline=max(2, duration * 2 // 3),
            retry_period=max(1, duration // 7),
        )
    workers = None
    if args.worker_clusters is not None:
        try:
            workers = WorkerClusters.from_directory(Path(args.worker_clusters))
        except WorkerClustersError as error:
            print(f"sustaindiffusion-operator: --worker-clusters: {error}", file=sys.stderr)
            return 2
        logging.getLogger(__name__).info("worker clusters: %s", ", ".join(sorted(workers.clients)))
    RUNTIME.settings = RuntimeSettings(
        workers=args.workers,
        resync=args.resync_seconds,
        stuck_after=args.stuck_after_seconds,
        lease=lease,
        api_timeout=args.api_timeout_seconds,
        worker_clusters=workers,
    )
    if args.metrics_port:
        serve_metrics(args.metrics_port, RUNTIME.metrics, args.metrics_address, RUNTIME.work_metrics)
    if args.health_port:
        serve_health(args.health_port, args.health_address, RUNTIME.health)
    asyncio.run(kopf.operator(clusterwide=not args.namespace, namespaces=args.namespace or []))
    return 0


if __name__ == "__main__":
    sys.exit(main())
