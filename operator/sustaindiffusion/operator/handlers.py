"""kopf handlers: watch only. They queue searches for the supervisor's workers; no finalizers."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

import kopf
from kubernetes import client, config

from sustaindiffusion.api.resource import GROUP, PLURAL, VERSION
from sustaindiffusion.kube.api import CONNECT_TIMEOUT_S, READ_TIMEOUT_S, TimeoutApiClient
from sustaindiffusion.kube.builders import SearchRef
from sustaindiffusion.kube.clusters import WorkerClusters
from sustaindiffusion.kube.executor import release_results
from sustaindiffusion.kube.names import COMPONENT_WORKER, LABEL_COMPONENT, LABEL_GENERATION, LABEL_SEARCH
from sustaindiffusion.operator import leadership
from sustaindiffusion.operator.driver import SearchDriver
from sustaindiffusion.operator.events import EventPoster
from sustaindiffusion.operator.metrics import SearchMetrics, WorkMetrics
from sustaindiffusion.operator.supervisor import (
    RESYNC_SECONDS,
    STUCK_AFTER_SECONDS,
    WORKERS,
    Health,
    Supervisor,
)
from sustaindiffusion.operator.wakes import WorkerSignals

log = logging.getLogger(__name__)

SPARE_CONNECTIONS = 4


@dataclass
class RuntimeSettings:
    """What the command line sets before kopf starts."""

    workers: int = WORKERS
    resync: float = RESYNC_SECONDS
    stuck_after: float = STUCK_AFTER_SECONDS
    lease: leadership.LeaseSettings | None = field(default_factory=leadership.LeaseSettings)  # None: none
    api_timeout: float = READ_TIMEOUT_S
    worker_clusters: WorkerClusters | None = None  # MultiKueue's worker clusters, as the operator reads them


class Runtime:
    """What the handlers share: the API client, the supervisor and the metrics collector."""

    def __init__(self) -> None:
        self.settings = RuntimeSettings()
        self.metrics = SearchMetrics()
        self.work_metrics = WorkMetrics()
        self.worker_signals = WorkerSignals()
        self.supervisor: Supervisor | None = None
        self.api: client.ApiClient | None = None
        self.leading = False

    def start(self) -> Supervisor:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        timeout = (min(CONNECT_TIMEOUT_S, self.settings.api_timeout), self.settings.api_timeout)
        configuration = client.Configuration.get_default_copy()
        # A connection for every worker, the event poster and the Lease: a smaller pool (urllib3's
        # default is 10) discards connections under load, and each new one costs a TLS handshake.
        configuration.connection_pool_maxsize = self.settings.workers + SPARE_CONNECTIONS
        api = TimeoutApiClient(configuration, timeout)
        self.api = api
        events = EventPoster(api)
        settings = self.settings
        supervisor = Supervisor(
            lambda ns, name: SearchDriver(api, ns, name, self.metrics, events.post, settings.worker_clusters),
            workers=settings.workers,
            resync=settings.resync,
            stuck_after=settings.stuck_after,
            timings=self.work_metrics,
        )
        self.supervisor = supervisor

        def lead() -> None:
            log.info("leading: stepping searches with %d workers", settings.workers)
            self.leading = True
            supervisor.start()

        if settings.lease is None:
            lead()
        else:
            leadership.lead(api, settings.lease, lead)
        return supervisor

    def health(self) -> Health | None:
        return self.supervisor.health() if self.supervisor is not None and self.leading else None


RUNTIME = Runtime()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Keep kopf's bookkeeping in annotations: the status schema is ours and prunes unknown fields.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.enabled = False  # events come from the drivers, with our reasons
    settings.watching.server_timeout = 120
    settings.watching.client_timeout = 150  # a watch connection that went silent is reopened
    settings.watching.connect_timeout = 10
    settings.peering.standalone = True  # one writer is chosen by our Lease, not by kopf's peering
    # The API server sends only worker Jobs and pods (the handlers' `labels=` filter on the client,
    # after every pod and Job of the namespace has been sent and parsed).
    workers = f"{LABEL_COMPONENT}={COMPONENT_WORKER}"
    settings.watching.label_selectors["batch", "jobs"] = workers
    settings.watching.label_selectors["v1", "pods"] = workers
    RUNTIME.start()


@kopf.on.cleanup()
def shutdown(**_: Any) -> None:
    if RUNTIME.supervisor is not None:
        RUNTIME.supervisor.stop_all()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def search_event(*, event: kopf.RawEvent, namespace: str | None, name: str, **_: Any) -> None:
    supervisor = RUNTIME.supervisor
    if supervisor is None or namespace is None:
        return
    if event.get("type") == "DELETED":
        supervisor.stop(namespace, name)
        RUNTIME.metrics.forget(namespace, name)
        uid = ((event.get("object") or {}).get("metadata") or {}).get("uid")
        if RUNTIME.settings.worker_clusters is not None and RUNTIME.api is not None and uid:
            # Its worker pods in every cluster hold their results for nobody now: let them go.
            search = SearchRef(name, namespace, str(uid))
            core = client.CoreV1Api(RUNTIME.api)
            await asyncio.to_thread(release_results, core, RUNTIME.settings.worker_clusters, search)
    else:
        version = ((event.get("object") or {}).get("metadata") or {}).get("resourceVersion")
        supervisor.ensure(namespace, name, str(version) if version else None)


# The handlers are coroutines: kopf runs them in its event loop, where queueing a key is immediate,
# instead of handing each of the many worker events to a thread pool.
@kopf.on.event("batch", "v1", "jobs", labels={LABEL_COMPONENT: COMPONENT_WORKER})
async def job_event(
    *, event: kopf.RawEvent, body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> None:
    _wake(namespace, labels, RUNTIME.worker_signals.job_event(event.get("type"), body))


@kopf.on.event("", "v1", "pods", labels={LABEL_COMPONENT: COMPONENT_WORKER})
async def pod_event(
    *, event: kopf.RawEvent, body: kopf.Body, namespace: str | None, labels: kopf.Labels, **_: Any
) -> None:
    _wake(namespace, labels, RUNTIME.worker_signals.pod_event(event.get("type"), body))


def _wake(namespace: str | None, labels: kopf.Labels, delay: float | None) -> None:
    if RUNTIME.supervisor is None or namespace is None or delay is None or LABEL_SEARCH not in labels:
        return
    try:
        generation: int | None = int(labels.get(LABEL_GENERATION, ""))
    except ValueError:
        generation = None
    RUNTIME.supervisor.wake(namespace, labels[LABEL_SEARCH], generation, delay)
