"""100 searches on one operator: memory, CPU, turnaround, API request rates and restart time.

Starts the test control plane (real kube-apiserver, controller-manager, scheduler) and the test
kubelet, whose worker pods run the stand-in worker (`tests/support/standin_worker.py`:
deterministic results in milliseconds, so the cost measured is the operator's), and runs
`tests.support.scale.run_scale`: N searches of population 64 at once (half end after one
generation, half after two), a kill and restart of the operator once the short ones finished,
then an idle window with the operator's requests counted by a proxy.

    .venv/bin/python benchmarks/operator_scale.py [--searches 100] [--population 64]

Targets: resident memory < 300 MB, turnaround p99 < 2 s, restart < 30 s, idle API rate of the
finished searches < 1 request/s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from kubernetes import client, config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sustaindiffusion.api.crd import CRD_PATH  # noqa: E402
from tests.support.controlplane import ControlPlane, locate_binaries  # noqa: E402
from tests.support.kubelet import TestKubelet  # noqa: E402
from tests.support.processes import wait_until  # noqa: E402
from tests.support.scale import run_scale  # noqa: E402

NAMESPACE = "scale"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--searches", type=int, default=100)
    parser.add_argument("--population", type=int, default=64)
    parser.add_argument("--long-generations", type=int, default=2)
    parser.add_argument("--idle-window", type=float, default=30.0, help="seconds of the idle count")
    parser.add_argument("--pods", default="48", help="pods the test kubelet runs at once")
    parser.add_argument(
        "--workers", type=int, default=None, help="the operator's --workers (default: its own)"
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sd-scale-"))
    plane = ControlPlane(locate_binaries(), workdir / "control-plane")
    plane.start()
    kubelet = None
    try:
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        env = {
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            "HOME": str(Path.home()),
        }
        kubelet = TestKubelet(
            api,
            workdir / "kubelet",
            capacity={"cpu": "64", "memory": "256Gi", "pods": args.pods},
            base_env=env,
        )
        kubelet.start()
        plane.install_crds(CRD_PATH)
        core = client.CoreV1Api(api)
        core.create_namespace({"metadata": {"name": NAMESPACE}})
        wait_until(
            lambda: core.read_namespaced_service_account("default", NAMESPACE), 60, what="service account"
        )
        figures = run_scale(
            plane,
            api,
            kubelet,
            NAMESPACE,
            workdir,
            args.searches,
            population=args.population,
            long_generations=args.long_generations,
            idle_window_s=args.idle_window,
            operator_args=("--workers", str(args.workers)) if args.workers else (),
        )
        print("\n".join(figures.lines()))
    finally:
        if kubelet is not None:
            kubelet.stop()
        plane.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
