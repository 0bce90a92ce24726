"""Kubernetes Events about a search (what `kubectl describe` shows)."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

REPORTER = "sustaindiffusion-operator"


class EventPoster:
    def __init__(self, api: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api)

    def post(self, body: dict[str, Any], kind: str, reason: str, message: str) -> None:
        metadata = body["metadata"]
        timestamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event: Any = {
            "metadata": {
                "name": f"{metadata['name']}.{uuid.uuid4().hex[:12]}",
                "namespace": metadata["namespace"],
            },
            "involvedObject": {
                "apiVersion": body["apiVersion"],
                "kind": body["kind"],
                "name": metadata["name"],
                "namespace": metadata["namespace"],
                "uid": metadata["uid"],
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "firstTimestamp": timestamp,
            "lastTimestamp": timestamp,
            "count": 1,
            "source": {"component": REPORTER},
            "reportingComponent": REPORTER,
        }
        try:
            self.core.create_namespaced_event(metadata["namespace"], event)
        except ApiException as error:  # events are best effort: never fail a reconciliation for one
            log.warning("event %s not posted: %s", reason, error.reason)
        except Exception as error:  # a timeout or a lost connection is no reason either
            log.warning("event %s not posted: %s", reason, error)
