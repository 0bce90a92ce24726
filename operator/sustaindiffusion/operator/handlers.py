"""kopf handlers: watch only. They start, wake and stop the per-search drivers; no finalizers."""

from __future__ import annotations

import logging
from typing import Any

import kopf
from kubernetes import client, config

from sustaindiffusion.api.resource import GROUP, PLURAL, VERSION
from sustaindiffusion.kube.names import COMPONENT_WORKER, LABEL_COMPONENT, LABEL_SEARCH
from sustaindiffusion.operator.driver import SearchDriver
from sustaindiffusion.operator.events import EventPoster
from sustaindiffusion.operator.metrics import SearchMetrics
from sustaindiffusion.operator.supervisor import Supervisor

log = logging.getLogger(__name__)


class Runtime:
    """What the handlers share: the API client, the supervisor and the metrics collector."""

    def __init__(self) -> None:
        self.metrics = SearchMetrics()
        self.api: client.ApiClient | None = None
        self.supervisor: Supervisor | None = None

    def start(self) -> Supervisor:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except config.ConfigException:
            config.load_kube_config()  # type: ignore[no-untyped-call]
        self.api = client.ApiClient()
        events = EventPoster(self.api)
        api = self.api
        self.supervisor = Supervisor(lambda ns, name: SearchDriver(api, ns, name, self.metrics, events.post))
        return self.supervisor


RUNTIME = Runtime()


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Keep kopf's bookkeeping in annotations: the status schema is ours and prunes unknown fields.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.enabled = False  # events come from the drivers, with our reasons
    settings.watching.server_timeout = 120
    settings.peering.standalone = True  # one replica (the Deployment is Recreate): no peering objects
    RUNTIME.start()


@kopf.on.cleanup()
def shutdown(**_: Any) -> None:
    if RUNTIME.supervisor is not None:
        RUNTIME.supervisor.stop_all()


@kopf.on.event(GROUP, VERSION, PLURAL)
def search_event(*, event: kopf.RawEvent, namespace: str | None, name: str, **_: Any) -> None:
    supervisor = RUNTIME.supervisor
    if supervisor is None or namespace is None:
        return
    if event.get("type") == "DELETED":
        supervisor.stop(namespace, name)
        RUNTIME.metrics.forget(namespace, name)
    else:
        supervisor.ensure(namespace, name)


@kopf.on.event("batch", "v1", "jobs", labels={LABEL_COMPONENT: COMPONENT_WORKER})
@kopf.on.event("", "v1", "pods", labels={LABEL_COMPONENT: COMPONENT_WORKER})
def worker_event(*, namespace: str | None, labels: kopf.Labels, **_: Any) -> None:
    if RUNTIME.supervisor is not None and namespace is not None and LABEL_SEARCH in labels:
        RUNTIME.supervisor.wake(namespace, labels[LABEL_SEARCH])
