"""Many concurrent searches on one operator, on the real control plane, for the scale benchmark
(`benchmarks/operator_scale.py`, 100 searches) and its bounded test (`tests/e2e/test_scale.py`).

Worker pods run the stand-in worker (`tests/support/standin_worker.py`: deterministic results in
milliseconds), so what is measured is the operator's cost. Half the searches end after their
first generation, half run more. When half the searches have finished, the operator is killed
and a new one started: its restart time is until every search still running is back in its metrics
(archive replayed, Jobs observed). When all have finished, a third operator life talks to the
API server through a counting proxy, and its requests over a quiet window give the idle request
rate of finished searches. Throughout: the operator's resident memory and CPU, the API server's
own request counter (`apiserver_request_total`, every client), and each search's turnaround, from
the last worker pod of a generation succeeding to the Job of the next one appearing.
"""

from __future__ import annotations

import collections
import contextlib
import re
import statistics
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from kubernetes import client, watch

from sustaindiffusion.api.resource import API_VERSION, GROUP, KIND, PLURAL, VERSION
from sustaindiffusion.kube import names
from tests.support.controlplane import ControlPlane
from tests.support.faultproxy import proxied_kubeconfig, proxy_for
from tests.support.kubelet import TestKubelet
from tests.support.processes import wait_until
from tests.support.searches import OperatorProcess, standin_workers

STARTUP_TIMEOUT_S = 300.0  # a bound on a hang: the idle operator's start, on a loaded machine
WATCHED = ("sustainsearches", "jobs", "pods")  # what the operator watches (operator/handlers.py)
TERMINAL = ("Succeeded", "Failed")


def scale_spec(population: int, generations: int, seed: int) -> dict[str, Any]:
    """A search the stand-in answers: no model is loaded, so any model id will do."""
    return {
        "model": {"id": "standin/model", "width": 64, "height": 64},
        "prompts": {"inline": ["Photo portrait of a Software Engineer that codes."], "imagesPerPrompt": 1},
        "algorithm": {"populationSize": population, "generations": generations, "seed": seed},
        "execution": {"candidatesPerPod": 16, "parallelism": 4, "resources": {"requests": {"cpu": "10m"}}},
    }


@dataclass
class ScaleFigures:
    searches: int
    population: int
    phases: dict[str, str] = field(default_factory=dict)  # search -> its final phase
    wall_s: float = 0.0
    rss_mib: list[float] = field(default_factory=list)
    cpu_percent: list[float] = field(default_factory=list)
    turnarounds_s: list[float] = field(default_factory=list)
    apiserver_requests_per_s: float = 0.0  # all clients, while the searches ran
    apiserver_requests: collections.Counter[str] = field(default_factory=collections.Counter)
    apiserver_latency_ms: dict[str, float] = field(default_factory=dict)  # mean, by verb
    restart_s: float = 0.0
    running_at_restart: int = 0
    idle_requests_per_s: float = 0.0  # the operator's own, all searches finished
    idle_requests: collections.Counter[str] = field(default_factory=collections.Counter)
    watches: list[str] = field(default_factory=list)  # the idle operator's watch requests
    work: dict[str, tuple[float, int]] = field(default_factory=dict)  # mean s and count, after the restart

    def lines(self) -> list[str]:
        ordered = sorted(self.turnarounds_s)

        def quantile(q: float) -> float:
            return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

        done = collections.Counter(self.phases.values())
        return [
            f"{self.searches} searches of population {self.population}: {dict(done)} in {self.wall_s:.0f} s",
            f"operator resident memory: max {max(self.rss_mib, default=0):.0f} MiB (target < 300 MB); "
            f"CPU: mean {statistics.mean(self.cpu_percent or [0]):.0f}% of one core, "
            f"max {max(self.cpu_percent, default=0):.0f}%",
            f"turnaround over {len(ordered)} generation changes: p50 {quantile(0.5):.2f} s, "
            f"p90 {quantile(0.9):.2f} s, p99 {quantile(0.99):.2f} s (target p99 < 2 s)",
            f"API server requests while searching, all clients: {self.apiserver_requests_per_s:.1f}/s: "
            + ", ".join(f"{what} x{count}" for what, count in self.apiserver_requests.most_common(12)),
            "API server's mean time per request while searching: "
            + ", ".join(f"{verb} {ms:.0f} ms" for verb, ms in self.apiserver_latency_ms.items()),
            "after the restart, a due search waited for a worker "
            + ", a step took ".join(
                f"{mean:.2f} s on average ({count}x)"
                for mean, count in (self.work.get(w, (0.0, 0)) for w in ("queue_wait", "step"))
            ),
            f"restart with {self.searches - self.running_at_restart} finished and {self.running_at_restart} "
            f"running: {self.restart_s:.1f} s until every running search is back (target < 30 s)",
            f"idle API rate of the operator, {self.searches} finished searches: "
            f"{self.idle_requests_per_s:.2f} requests/s (target < 1/s): "
            + ", ".join(f"{what} x{count}" for what, count in self.idle_requests.most_common()),
        ]


class _Timeline:
    """When each search's generations' last pods succeeded and its Jobs appeared (one clock)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.pod_done: dict[tuple[str, int], float] = {}
        self.job_added: dict[tuple[str, int], float] = {}
        self.stop = threading.Event()

    def start(self, api: client.ApiClient) -> None:
        for target in (self._pods, self._jobs):
            threading.Thread(target=self._quietly, args=(target, api), daemon=True).start()

    def _quietly(self, target: Any, api: client.ApiClient) -> None:
        with contextlib.suppress(Exception):  # the stream breaks when the control plane stops
            target(api)

    def _pods(self, api: client.ApiClient) -> None:
        seen: set[str] = set()
        core = client.CoreV1Api(api)
        selector = f"{names.LABEL_COMPONENT}={names.COMPONENT_WORKER}"
        for event in watch.Watch().stream(
            core.list_namespaced_pod, self.namespace, label_selector=selector, timeout_seconds=3600
        ):
            if self.stop.is_set():
                return
            pod = event["object"]
            labels = pod.metadata.labels or {}
            if pod.status.phase == "Succeeded" and pod.metadata.uid not in seen:
                seen.add(pod.metadata.uid)
                key = (labels[names.LABEL_SEARCH], int(labels[names.LABEL_GENERATION]))
                self.pod_done[key] = time.monotonic()

    def _jobs(self, api: client.ApiClient) -> None:
        batch = client.BatchV1Api(api)
        selector = f"{names.LABEL_COMPONENT}={names.COMPONENT_WORKER}"
        for event in watch.Watch().stream(
            batch.list_namespaced_job, self.namespace, label_selector=selector, timeout_seconds=3600
        ):
            if self.stop.is_set():
                return
            labels = event["object"].metadata.labels or {}
            if event["type"] == "ADDED":
                key = (labels[names.LABEL_SEARCH], int(labels[names.LABEL_GENERATION]))
                self.job_added.setdefault(key, time.monotonic())

    def turnarounds(self, outage: tuple[float, float]) -> list[float]:
        """From each generation's last pod to the next generation's Job, except those that overlap
        `outage` (from the kill of an operator until its successor is back): they measure the restart."""
        down, back = outage
        return [
            added - done
            for (search, generation), done in self.pod_done.items()
            if (added := self.job_added.get((search, generation + 1))) is not None
            and not (done < back and added > down)
        ]


class _Sampler:
    """The resident memory and CPU of whichever operator process is current, every second."""

    def __init__(self) -> None:
        self.rss_mib: list[float] = []
        self.cpu_percent: list[float] = []
        self.process: psutil.Process | None = None
        self.stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def follow(self, pid: int) -> None:
        process = psutil.Process(pid)
        process.cpu_percent()
        self.process = process

    def _run(self) -> None:
        while not self.stop.wait(1.0):
            process = self.process
            with contextlib.suppress(psutil.Error):
                if process is not None:
                    self.rss_mib.append(process.memory_info().rss / 2**20)
                    self.cpu_percent.append(process.cpu_percent())


def apiserver_requests(plane: ControlPlane) -> tuple[collections.Counter[str], collections.Counter[str]]:
    """The API server's count of requests answered so far, every client, by verb and resource
    ("LIST pods", "PATCH sustainsearches/status"), and the microseconds it spent on them (watches
    excluded: they last as long as they are open)."""
    text = plane.kubectl("get", "--raw", "/metrics").stdout
    counts: collections.Counter[str] = collections.Counter()
    micros: collections.Counter[str] = collections.Counter()
    for metric, labels, value in re.findall(
        r"^apiserver_request_(total|duration_seconds_sum)\{([^}]*)\} (\S+)$", text, re.M
    ):
        named = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        resource = "/".join(filter(None, (named.get("resource"), named.get("subresource"))))
        what = f"{named.get('verb', '?')} {resource}"
        if metric == "total":
            counts[what] += int(float(value))
        elif not what.startswith("WATCH"):
            micros[what] += int(float(value) * 1e6)
    return counts, micros


def _mean_latency_ms(counts: collections.Counter[str], micros: collections.Counter[str]) -> dict[str, float]:
    """Mean server-side time of a request, by verb."""
    by_verb: dict[str, list[float]] = {}
    for what, total in micros.items():
        verb = what.split(" ", 1)[0]
        count_and_time = by_verb.setdefault(verb, [0.0, 0.0])
        count_and_time[0] += counts[what]
        count_and_time[1] += total
    return {verb: t / n / 1000 for verb, (n, t) in sorted(by_verb.items()) if n}


def _phases(api: client.ApiClient, namespace: str) -> dict[str, str]:
    listed: Any = client.CustomObjectsApi(api).list_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL
    )
    return {item["metadata"]["name"]: (item.get("status") or {}).get("phase", "") for item in listed["items"]}


def _work_means(operator: OperatorProcess) -> dict[str, tuple[float, int]]:
    """The operator's mean queue wait and step time so far, with their counts."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5).read()
    except OSError:
        return {}
    values = dict(
        re.findall(r"^(sustaindiffusion_operator_\w+_seconds_(?:sum|count)) (\S+)$", text.decode(), re.M)
    )
    means = {}
    for what in ("queue_wait", "step"):
        count = float(values.get(f"sustaindiffusion_operator_{what}_seconds_count", 0))
        total = float(values.get(f"sustaindiffusion_operator_{what}_seconds_sum", 0))
        means[what] = (total / count if count else float("nan"), int(count))
    return means


def _stepped(operator: OperatorProcess) -> set[str]:
    """The searches the operator has stepped since it started (its per-search metrics)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5).read()
    except OSError:
        return set()
    return set(re.findall(r'^sustaindiffusion_search_generation\{[^}]*search="([^"]+)"', text.decode(), re.M))


def _started_up(
    watch_targets: list[str], requests: list[tuple[int, str, str, str]], searches: set[str]
) -> bool:
    """Whether the operator has watches open on what it watches and has read every search once
    (a finished search's step is that read: it leaves no metric behind)."""
    watched = {_resource(target.split("?", 1)[0]) for target in list(watch_targets)}
    read = {
        path.rstrip("/").rsplit("/", 1)[-1]
        for _, method, path, _ in list(requests)
        if method == "GET" and _resource(path) == PLURAL
    }
    return watched >= set(WATCHED) and read >= searches


@contextlib.contextmanager
def _operator(
    plane: ControlPlane,
    namespace: str,
    workdir: Path,
    kubeconfig: Path | None = None,
    extra_args: tuple[str, ...] = (),
) -> Iterator[OperatorProcess]:
    operator = OperatorProcess(plane, namespace, workdir, kubeconfig=kubeconfig, extra_args=extra_args)
    operator.start()
    try:
        yield operator
    finally:
        operator.kill()


def run_scale(
    plane: ControlPlane,
    api: client.ApiClient,
    kubelet: TestKubelet,
    namespace: str,
    workdir: Path,
    searches: int,
    population: int = 64,
    long_generations: int = 2,
    idle_window_s: float = 30.0,
    timeout_s: float = 1800.0,
    operator_args: tuple[str, ...] = (),
) -> ScaleFigures:
    """Run `searches` searches (half of one generation, half of `long_generations`) on one
    operator at a time in `namespace`, which must exist and be watched by nobody else."""
    figures = ScaleFigures(searches=searches, population=population)
    custom = client.CustomObjectsApi(api)
    timeline = _Timeline(namespace)
    timeline.start(api)
    sampler = _Sampler()
    short = [f"short-{i:03d}" for i in range(searches // 2)]
    long = [f"long-{i:03d}" for i in range(searches - len(short))]
    deadline = time.monotonic() + timeout_s
    started = time.monotonic()
    try:
        with standin_workers(kubelet, namespace):
            with _operator(plane, namespace, workdir, extra_args=operator_args) as first:
                assert first.process is not None
                sampler.follow(first.process.pid)
                requests_before, micros_before = apiserver_requests(plane)
                for index, name in enumerate(short + long):
                    generations = 1 if name.startswith("short") else long_generations
                    body = {
                        "apiVersion": API_VERSION,
                        "kind": KIND,
                        "metadata": {"name": name},
                        "spec": scale_spec(population, generations, seed=index),
                    }
                    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
                wait_until(
                    lambda: len(_finished(api, namespace)) >= len(short),
                    max(1.0, deadline - time.monotonic()),
                    interval=0.5,
                    what="half the searches to finish",
                )
            killed = time.monotonic()  # the first operator's life ended with the block above
            phases = _phases(api, namespace)
            running = {n for n in long if phases.get(n) not in TERMINAL}
            figures.running_at_restart = len(running)
            with _operator(plane, namespace, workdir, extra_args=operator_args) as second:
                restarted = time.monotonic()
                assert second.process is not None
                sampler.follow(second.process.pid)
                wait_until(
                    lambda: running <= _stepped(second) | _finished(api, namespace),
                    max(1.0, deadline - time.monotonic()),
                    interval=0.2,
                    what="every running search to be back after the restart",
                )
                back = time.monotonic()
                figures.restart_s = back - restarted
                wait_until(
                    lambda: all(p in TERMINAL for p in _phases(api, namespace).values()),
                    max(1.0, deadline - time.monotonic()),
                    interval=1.0,
                    what="every search to finish",
                )
                figures.wall_s = time.monotonic() - started
                figures.work = _work_means(second)
                requests_after, micros_after = apiserver_requests(plane)
                figures.apiserver_requests = requests_after - requests_before
                figures.apiserver_latency_ms = _mean_latency_ms(
                    figures.apiserver_requests, micros_after - micros_before
                )
                figures.apiserver_requests_per_s = figures.apiserver_requests.total() / figures.wall_s
        figures.phases = _phases(api, namespace)
        figures.turnarounds_s = timeline.turnarounds((killed, back))
        with proxy_for(plane) as proxy:
            kubeconfig = proxied_kubeconfig(plane, proxy, workdir)
            with _operator(plane, namespace, workdir, kubeconfig, operator_args) as idle:
                assert idle.process is not None
                sampler.follow(idle.process.pid)
                # The idle window opens once the restarted operator has done what it does on start:
                # watches open on searches, Jobs and pods (each after its list) and every search
                # read once. A fixed settling delay (10 s) raced a loaded machine.
                wait_until(
                    lambda: _started_up(proxy.watch_targets, proxy.log, set(figures.phases)),
                    STARTUP_TIMEOUT_S,
                    interval=0.5,
                    what="the idle operator to watch and step every search once",
                )
                before = proxy.requests
                time.sleep(idle_window_s)
                figures.idle_requests_per_s = (proxy.requests - before) / idle_window_s
                figures.watches = list(proxy.watch_targets)
                figures.idle_requests = collections.Counter(
                    f"{method} {_resource(path)}"
                    for number, method, path, _ in list(proxy.log)
                    if number > before
                )
    finally:
        timeline.stop.set()
        sampler.stop.set()
    figures.rss_mib, figures.cpu_percent = sampler.rss_mib, sampler.cpu_percent[1:]
    return figures


def _finished(api: client.ApiClient, namespace: str) -> set[str]:
    return {name for name, phase in _phases(api, namespace).items() if phase in TERMINAL}


def _resource(path: str) -> str:
    """The kind of object a request path names: configmaps, sustainsearches, leases..."""
    match = re.search(r"/namespaces/[^/]+/([^/]+)", path)
    return match.group(1) if match else path.rstrip("/").rsplit("/", 1)[-1]
