"""How fast does the operator turn a finished generation into the next one, and what does it cost?

Starts the test control plane (real kube-apiserver, controller-manager, scheduler) and the test
kubelet, runs the real operator process, and drives a search of population 64 with the real worker
on the tiny models (1 step, 1 image per candidate, 16 candidates per pod, so the run is short). A
watch records when the last worker pod of generation g succeeds and when the Job of generation
g + 1 appears; the difference is the turnaround. The operator's CPU and resident memory are
sampled throughout.

    .venv/bin/python benchmarks/operator_turnaround.py [--generations 4] [--population 64]

Targets: median turnaround under 1 s at population 64; operator resident memory under 200 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
from kubernetes import client, config, watch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sustaindiffusion.api.crd import CRD_PATH  # noqa: E402
from sustaindiffusion.api.resource import API_VERSION, GROUP, KIND, PLURAL, VERSION  # noqa: E402
from sustaindiffusion.kube import names  # noqa: E402
from tests.support.controlplane import ControlPlane, locate_binaries  # noqa: E402
from tests.support.kubelet import TestKubelet  # noqa: E402
from tests.support.processes import ManagedProcess, wait_until  # noqa: E402
from tests.support.searches import operator_command  # noqa: E402
from tests.support.slots import free_port  # noqa: E402
from tests.support.tiny import ensure_tiny_models  # noqa: E402

NAMESPACE = "bench"
SEARCH = "turnaround"


def search_spec(models: Path, population: int, generations: int) -> dict[str, Any]:
    return {
        "model": {"id": str(models / "sd3"), "dtype": "float32", "width": 64, "height": 64},
        "prompts": {"inline": ["Photo portrait of a Software Engineer that codes."], "imagesPerPrompt": 1},
        "searchSpace": {"inferenceSteps": {"fixed": 1}},
        "objectives": [{"name": "GenderBias"}, {"name": "EthnicBias"}, {"name": "Quality"}],
        "scoring": {
            "vqaModel": {"id": str(models / "blip-vqa")},
            "quality": {"model": {"id": str(models / "clip")}},
            "humanFilter": {"enabled": False},
        },
        "algorithm": {"populationSize": population, "generations": generations, "seed": 1},
        "execution": {"candidatesPerPod": 16, "parallelism": 4, "resources": {"requests": {"cpu": "100m"}}},
    }


class Timeline:
    """Monotonic times of worker pods succeeding and Jobs appearing, from one watcher's clock."""

    def __init__(self) -> None:
        self.pod_done: dict[int, float] = {}  # generation -> time its latest pod succeeded
        self.job_added: dict[int, float] = {}
        self.stop = threading.Event()

    def watch_pods(self, core: client.CoreV1Api) -> None:
        with contextlib.suppress(Exception):  # the stream breaks when the control plane stops
            self._watch_pods(core)

    def watch_jobs(self, batch: client.BatchV1Api) -> None:
        with contextlib.suppress(Exception):
            self._watch_jobs(batch)

    def _watch_pods(self, core: client.CoreV1Api) -> None:
        seen: set[str] = set()
        stream = watch.Watch()
        for event in stream.stream(core.list_namespaced_pod, NAMESPACE, timeout_seconds=3600):
            if self.stop.is_set():
                return
            pod = event["object"]
            generation = (pod.metadata.labels or {}).get(names.LABEL_GENERATION)
            if generation is not None and pod.status.phase == "Succeeded" and pod.metadata.uid not in seen:
                seen.add(pod.metadata.uid)
                self.pod_done[int(generation)] = time.monotonic()

    def _watch_jobs(self, batch: client.BatchV1Api) -> None:
        stream = watch.Watch()
        for event in stream.stream(batch.list_namespaced_job, NAMESPACE, timeout_seconds=3600):
            if self.stop.is_set():
                return
            job = event["object"]
            generation = (job.metadata.labels or {}).get(names.LABEL_GENERATION)
            if event["type"] == "ADDED" and generation is not None:
                self.job_added.setdefault(int(generation), time.monotonic())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--population", type=int, default=64)
    args = parser.parse_args()
    models = ensure_tiny_models()
    workdir = Path(tempfile.mkdtemp(prefix="sd-bench-"))
    plane = ControlPlane(locate_binaries(), workdir / "control-plane")
    plane.start()
    kubelet = operator = None
    try:
        api = config.new_client_from_config(config_file=str(plane.kubeconfig))
        env = {
            "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            "HOME": str(Path.home()),
            "HF_HUB_OFFLINE": "1",
        }
        kubelet = TestKubelet(
            api, workdir / "kubelet", capacity={"cpu": "64", "memory": "256Gi", "pods": "110"}, base_env=env
        )
        kubelet.start()
        plane.install_crds(CRD_PATH)
        core, batch = client.CoreV1Api(api), client.BatchV1Api(api)
        core.create_namespace({"metadata": {"name": NAMESPACE}})
        wait_until(
            lambda: core.read_namespaced_service_account("default", NAMESPACE), 60, what="service account"
        )
        operator = ManagedProcess(
            "operator",
            operator_command(NAMESPACE, free_port()),
            workdir / "operator.log",
            env=dict(os.environ, KUBECONFIG=str(plane.kubeconfig)),
        )
        timeline = Timeline()
        for target, api_object in ((timeline.watch_pods, core), (timeline.watch_jobs, batch)):
            threading.Thread(target=target, args=(api_object,), daemon=True).start()
        process = psutil.Process(operator.pid)
        samples: list[tuple[float, float]] = []  # (rss MiB, cpu %)
        process.cpu_percent()
        custom = client.CustomObjectsApi(api)
        custom.create_namespaced_custom_object(
            GROUP,
            VERSION,
            NAMESPACE,
            PLURAL,
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "metadata": {"name": SEARCH},
                "spec": search_spec(models, args.population, args.generations),
            },
        )
        started = time.monotonic()
        while True:
            search: Any = custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, SEARCH)
            status = search.get("status") or {}
            samples.append((process.memory_info().rss / 2**20, process.cpu_percent()))
            if status.get("phase") in ("Succeeded", "Failed"):
                break
            if time.monotonic() - started > 1800:
                raise TimeoutError("the search did not finish in 30 minutes")
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        timeline.stop.set()
        turnarounds = [
            timeline.job_added[g + 1] - timeline.pod_done[g]
            for g in sorted(timeline.pod_done)
            if g + 1 in timeline.job_added
        ]
        print(
            f"search of population {args.population}, {args.generations} generations (+ baseline): "
            f"{status.get('phase')} in {elapsed:.0f} s, {status.get('evaluations')}"
        )
        print(
            "turnaround, last result of a generation -> next generation's Job (s): "
            + ", ".join(f"{t:.3f}" for t in turnarounds)
        )
        print(f"median turnaround {statistics.median(turnarounds):.3f} s (target < 1 s)")
        rss = [s[0] for s in samples]
        cpu = [s[1] for s in samples[1:]]
        print(
            f"operator resident memory: max {max(rss):.0f} MiB, median {statistics.median(rss):.0f} MiB "
            f"(target < 200 MB); CPU: mean {statistics.mean(cpu):.1f}% of one core, max {max(cpu):.0f}%"
        )
    finally:
        if operator is not None:
            operator.stop()
        if kubelet is not None:
            kubelet.stop()
        plane.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
