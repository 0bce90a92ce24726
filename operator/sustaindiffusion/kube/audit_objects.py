"""Pure construction of the objects `sustaindiffusion audit` creates beside a search in a cluster:
the short-lived reader pod that mounts the search's artifacts claim read-only (the CLI copies the
audit's records and images out of it through exec), and the ConfigMap that carries a scored audit
to `sustaindiffusion report --search`.

Both are owned by the search (not as its controller): deleting the search deletes them. Neither is
the operator's: they carry the CLI as their manager and a component the operator does not watch.
"""

from __future__ import annotations

import json
from typing import Any

from sustaindiffusion.api.resource import API_VERSION, KIND
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.kube.builders import (
    SearchRef,
    worker_container_security,
    worker_placement,
    worker_pod_security,
)
from sustaindiffusion.kube.names import (
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    LABEL_SEARCH,
    audit_config_map_name,
    audit_reader_pod_name,
    search_label,
)

COMPONENT_AUDIT_READER = "audit-reader"
COMPONENT_AUDIT = "audit"
CLI_MANAGER = "sustaindiffusion-cli"
READER_CONTAINER = "reader"
SCORE_KEY = "score.json"
READER_LIFETIME_SECONDS = 1800  # the pod ends itself even when the CLI that made it was killed
# A ConfigMap holds at most 1 MiB; a score is tens of kilobytes.
MAX_SCORE_BYTES = 900 * 1024

Manifest = dict[str, Any]

# Run with the image's python3 in the reader pod, as `python3 -c READER_SCRIPT ROOT MODE ARGS...`:
# `list PATTERN...` prints a JSON list of the regular files under ROOT matching the glob patterns;
# `tar PATH...` writes those files (relative to ROOT) to stdout as an uncompressed tar stream.
# Python, not tar or find: the image is known to have it, whatever its base.
READER_SCRIPT = """
import glob, json, os, sys, tarfile
root, mode, args = sys.argv[1], sys.argv[2], sys.argv[3:]
if not os.path.isdir(root):
    sys.exit(f"no directory {root} on the artifacts claim: did the search save its artifacts there?")
os.chdir(root)
if mode == "list":
    found = sorted({p for pattern in args for p in glob.glob(pattern) if os.path.isfile(p)})
    sys.stdout.write(json.dumps(found))
elif mode == "tar":
    with tarfile.open(fileobj=sys.stdout.buffer, mode="w|") as archive:
        for path in args:
            archive.add(path, recursive=False)
else:
    sys.exit(f"unknown mode {mode}")
"""


def _owner(search: SearchRef) -> Manifest:
    # Owned, so deleting the search deletes it; not its controller (the operator controls the search).
    return {"apiVersion": API_VERSION, "kind": KIND, "name": search.name, "uid": search.uid}


def _labels(search: SearchRef, component: str) -> dict[str, str]:
    return {
        LABEL_SEARCH: search_label(search.name),
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: CLI_MANAGER,
    }


def artifacts_root(search: SearchRef, spec: SustainSearchSpec) -> str:
    """Where the search's workers wrote its artifacts, inside a pod that mounts its claim."""
    artifacts = spec.execution.artifacts
    if artifacts is None:
        raise ValueError("the search has no artifacts claim")
    return f"{artifacts.path}/{search.name}"


def reader_pod(search: SearchRef, spec: SustainSearchSpec, image: str) -> Manifest:
    """A pod that mounts the search's artifacts claim read-only and waits, for exec to read from.

    It runs as the worker does (its user, read-only root, no capabilities, no token) and where the
    workers ran (their node selector, tolerations and affinity: a ReadWriteOnce claim's volume may
    only attach there, and the image is likely already on those nodes)."""
    execution = spec.execution
    artifacts = execution.artifacts
    if artifacts is None:
        raise ValueError("the search has no artifacts claim")
    container: Manifest = {
        "name": READER_CONTAINER,
        "image": image,
        "imagePullPolicy": execution.image_pull_policy,
        "command": ["python3", "-c", f"import time; time.sleep({READER_LIFETIME_SECONDS})"],
        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "512Mi"}},
        "volumeMounts": [{"name": "artifacts", "mountPath": artifacts.path, "readOnly": True}],
        "securityContext": worker_container_security(),
    }
    pod_spec: Manifest = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "activeDeadlineSeconds": READER_LIFETIME_SECONDS,
        "terminationGracePeriodSeconds": 0,
        "securityContext": worker_pod_security(),
        "containers": [container],
        "volumes": [
            {
                "name": "artifacts",
                "persistentVolumeClaim": {"claimName": artifacts.claim_name, "readOnly": True},
            }
        ],
    }
    pod_spec.update({key: value for key, value in worker_placement(execution).items() if value})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": audit_reader_pod_name(search.name),
            "namespace": search.namespace,
            "labels": _labels(search, COMPONENT_AUDIT_READER),
            "ownerReferences": [_owner(search)],
        },
        "spec": pod_spec,
    }


def reader_command(root: str, mode: str, arguments: list[str]) -> list[str]:
    return ["python3", "-c", READER_SCRIPT, root, mode, *arguments]


def audit_config_map(search: SearchRef, score: dict[str, Any]) -> Manifest:
    """The scored audit of `search`, for `sustaindiffusion report --search` to read."""
    text = json.dumps(score, indent=1)
    if len(text.encode()) > MAX_SCORE_BYTES:
        raise ValueError(
            f"the score is {len(text.encode())} bytes, more than a ConfigMap holds ({MAX_SCORE_BYTES})"
        )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": audit_config_map_name(search.name),
            "namespace": search.namespace,
            "labels": _labels(search, COMPONENT_AUDIT),
            "ownerReferences": [_owner(search)],
        },
        "data": {SCORE_KEY: text},
    }


def owned_by(body: Manifest, uid: str) -> bool:
    """Whether an object (as the API returns it, a dict) is owned by the search with `uid`."""
    owners = (body.get("metadata") or {}).get("ownerReferences") or []
    return any(owner.get("uid") == uid for owner in owners)
