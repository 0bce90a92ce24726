"""Metrics and the Grafana dashboard against a real Prometheus (Debian's `prometheus`, installed by
`make test`): Prometheus discovers the worker pods of the test API server, labelled with their
namespace and pod as a PodMonitor labels them (through HTTP service discovery: Debian builds
Prometheus without Kubernetes discovery), scrapes them and the operator during a search, and every
PromQL expression of the shipped dashboard returns data. DCGM panels are fed by a fixture exporter
that serves recorded DCGM readings for the worker pods that exist at each scrape (DCGM itself needs
a GPU)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from sustaindiffusion.api.resource import API_VERSION, GROUP, KIND, PLURAL, VERSION
from tests.support.controlplane import REPO_ROOT, ControlPlane
from tests.support.kubelet import TestKubelet
from tests.support.processes import ManagedProcess, wait_until
from tests.support.searches import SearchFailedError, operator_command, search_succeeded
from tests.support.slots import free_port
from tests.support.tiny import ensure_tiny_models

DASHBOARD = REPO_ROOT / "charts" / "sustaindiffusion" / "dashboards" / "sustaindiffusion.json"
WORKER_METRICS_PORT = 9400
SCRAPE_INTERVAL = "500ms"


class DcgmFixture(ThreadingHTTPServer):
    """Serves recorded DCGM exporter readings for every worker pod present at scrape time (/metrics)
    and the worker pods as HTTP service-discovery targets (/sd)."""

    def __init__(self, core: client.CoreV1Api, namespace: str) -> None:
        self.core, self.namespace, self.started = core, namespace, time.monotonic()
        super().__init__(("127.0.0.1", free_port()), _DcgmHandler)

    def worker_pods(self) -> list[Any]:
        selector = "sustaindiffusion.io/component=worker"
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        return [pod for pod in pods if pod.status.phase in ("Pending", "Running")]

    def targets(self) -> str:
        return json.dumps(
            [
                {
                    "targets": [f"{pod.status.pod_ip or '127.0.0.1'}:{WORKER_METRICS_PORT}"],
                    "labels": {"namespace": self.namespace, "pod": pod.metadata.name},
                }
                for pod in self.worker_pods()
            ]
        )

    def exposition(self) -> str:
        pods = self.worker_pods()
        elapsed = time.monotonic() - self.started
        power = ["# TYPE DCGM_FI_DEV_POWER_USAGE gauge"]
        energy = ["# TYPE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION counter"]
        for index, pod in enumerate(pods):
            labels = (
                f'gpu="{index}",modelName="NVIDIA H100 80GB HBM3",namespace="{self.namespace}",'
                f'pod="{pod.metadata.name}",container="worker"'
            )
            power.append(f"DCGM_FI_DEV_POWER_USAGE{{{labels}}} 312.5")
            energy.append(f"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{labels}}} {int(1e9 + 312_500 * elapsed)}")
        lines = power + energy  # each metric family's samples together, after its TYPE line
        return "\n".join(lines) + "\n"


class _DcgmHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        fixture: Any = self.server
        discovery = self.path.startswith("/sd")
        body = (fixture.targets() if discovery else fixture.exposition()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json" if discovery else "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def prometheus_config(operator_port: int, fixture_port: int) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": "450ms"},
        "scrape_configs": [
            {"job_name": "operator", "static_configs": [{"targets": [f"127.0.0.1:{operator_port}"]}]},
            {
                "job_name": "dcgm",
                "honor_labels": True,
                "static_configs": [{"targets": [f"127.0.0.1:{fixture_port}"]}],
            },
            {
                # The worker pods with namespace and pod labels, as the chart's PodMonitor gives them.
                "job_name": "sustaindiffusion-workers",
                "http_sd_configs": [{"url": f"http://127.0.0.1:{fixture_port}/sd", "refresh_interval": "1s"}],
            },
        ],
    }


@pytest.fixture
def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        raise AssertionError("prometheus is not installed: `make test` installs Debian's prometheus package")
    return binary


def dashboard_expressions() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel["targets"]]


def concrete(expression: str) -> str:
    return expression.replace("$namespace", ".*").replace("$search", ".*").replace("$__range", "10m")


def query_range(port: int, expression: str, start: float, end: float) -> list[Any]:
    parameters = urllib.parse.urlencode({"query": expression, "start": start, "end": end, "step": "1"})
    with urllib.request.urlopen(
        f"http://127.0.0.1:{port}/api/v1/query_range?{parameters}", timeout=10
    ) as response:
        payload = json.loads(response.read())
    assert payload["status"] == "success", payload
    return list(payload["data"]["result"])


@pytest.fixture
def observed_search(
    control_plane: ControlPlane,
    crd_installed: None,
    api_client: client.ApiClient,
    test_kubelet: TestKubelet,
    namespace: str,
    prometheus_binary: str,
) -> Iterator[tuple[int, float, float]]:
    """A search run by the operator while Prometheus scrapes; yields (prometheus port, start, end)."""
    workdir = Path(tempfile.mkdtemp(prefix="sd-prometheus-"))
    operator_port, prometheus_port = free_port(), free_port()
    dcgm = DcgmFixture(client.CoreV1Api(api_client), namespace)
    threading.Thread(target=dcgm.serve_forever, daemon=True).start()
    config = workdir / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(operator_port, dcgm.server_address[1])))
    check = subprocess.run(
        ["promtool", "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    processes = [
        ManagedProcess(
            "prometheus",
            [
                prometheus_binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
            workdir / "prometheus.log",
        ),
        ManagedProcess(
            "operator",
            operator_command(namespace, operator_port),
            workdir / "operator.log",
            env=dict(os.environ, KUBECONFIG=str(control_plane.kubeconfig)),
        ),
    ]
    try:
        wait_until(
            lambda: (
                urllib.request.urlopen(f"http://127.0.0.1:{prometheus_port}/-/ready", timeout=2).status == 200
            ),
            60,
            what="Prometheus ready",
        )
        models = ensure_tiny_models()
        spec = {
            "model": {"id": str(models / "sd3"), "dtype": "float32", "width": 64, "height": 64},
            "prompts": {
                "inline": ["Photo portrait of a Software Engineer that codes."],
                "imagesPerPrompt": 8,
            },
            "searchSpace": {"inferenceSteps": {"min": 8, "max": 16}},
            "scoring": {
                "vqaModel": {"id": str(models / "blip-vqa")},
                "quality": {"model": {"id": str(models / "clip")}},
                "humanFilter": {"enabled": True, "maxRetries": 1},
            },
            "constraints": {"quality": {"enabled": False}},
            # Pods live a few seconds past their model load, so several scrapes see them.
            "algorithm": {"populationSize": 8, "generations": 1, "seed": 4},
            "execution": {"candidatesPerPod": 8, "resources": {"requests": {"cpu": "100m"}}},
        }
        custom = client.CustomObjectsApi(api_client)
        start = time.time()
        custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "observed"}, "spec": spec},
        )

        # A bound on a hang, not a measure: with 16 images per prompt this search took 167 s in a warm
        # `make test` and over 300 s on a fresh 2-core machine, beside the Go and image builds.
        wait_until(
            lambda: search_succeeded(api_client, namespace, "observed"),
            900,
            interval=1.0,
            what="the observed search",
            fatal=(SearchFailedError,),
        )
        time.sleep(2)  # Prometheus scrapes every 0.5 s: a few more scrapes of the operator's final numbers
        yield prometheus_port, start, time.time()
    finally:
        for process in reversed(processes):
            process.stop()
        dcgm.shutdown()
        if not os.environ.get("SUSTAINDIFFUSION_KEEP_TEST_DIRS"):
            shutil.rmtree(workdir, ignore_errors=True)


def test_every_dashboard_query_returns_data_from_a_real_prometheus(
    observed_search: tuple[int, float, float],
) -> None:
    port, start, end = observed_search
    empty = []
    expressions = dashboard_expressions()
    assert len(expressions) >= 10
    for title, expression in expressions:
        if not query_range(port, concrete(expression), start, end):
            empty.append(f"{title}: {expression}")
    if empty and os.environ.get("SUSTAINDIFFUSION_DEBUG_PROMETHEUS"):
        for name in (
            'up{job="sustaindiffusion-workers"}',
            "sustaindiffusion_worker_gpu_power_watts",
            "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        ):
            print(name, json.dumps(query_range(port, name, start, end))[:1500])
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)
    # Metric names follow Prometheus conventions: counters end in _total, energy in joules.
    names = query_range(port, 'count by (__name__) ({__name__=~"sustaindiffusion_.*"})', start, end)
    found = {series["metric"]["__name__"] for series in names}
    assert "sustaindiffusion_search_energy_joules_total" in found
    assert "sustaindiffusion_worker_energy_joules_total" in found
