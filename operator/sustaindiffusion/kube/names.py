"""Deterministic names and labels of everything the operator creates for a search.

Names are derived from the search and the generation only, so creating them again after a
restart finds the same objects (AlreadyExists counts as success). Long search names are cut and
suffixed with a hash so every name stays a valid DNS label (Jobs put their name in a label).
"""

from __future__ import annotations

import hashlib

from sustaindiffusion.api.resource import GROUP

LABEL_SEARCH = f"{GROUP}/search"
# On portable worker pods (MultiKueue): which search made them, across clusters and reuses of a name.
LABEL_SEARCH_UID = f"{GROUP}/search-uid"
LABEL_GENERATION = f"{GROUP}/generation"
LABEL_ROUND = f"{GROUP}/round"
LABEL_COMPONENT = f"{GROUP}/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "sustaindiffusion-operator"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
KUEUE_MIN_PARALLELISM_ANNOTATION = "kueue.x-k8s.io/job-min-parallelism"  # partial admission

COMPONENT_TASK = "task"
COMPONENT_WORKER = "worker"
COMPONENT_ARCHIVE = "archive"

MAX_NAME = 63


def _bounded(base: str, suffix: str) -> str:
    """`base-suffix`, with `base` cut and hashed when the whole would exceed 63 characters."""
    name = f"{base}-{suffix}"
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(base.encode()).hexdigest()[:8]
    keep = MAX_NAME - len(suffix) - len(digest) - 2
    return f"{base[:keep].rstrip('-.')}-{digest}-{suffix}"


def _round_suffix(generation: int, round: int) -> str:
    # Round 0 keeps the names of searches launched before rounds existed.
    return f"g{generation:04d}" + (f"-r{round}" if round else "")


def job_name(search: str, generation: int, round: int = 0) -> str:
    return _bounded(search, _round_suffix(generation, round))


def task_config_map_name(search: str, generation: int, round: int = 0) -> str:
    return _bounded(search, f"{_round_suffix(generation, round)}-task")


def archive_config_map_name(search: str, index: int) -> str:
    return _bounded(search, f"archive-{index:05d}")


def audit_reader_pod_name(search: str) -> str:
    return _bounded(search, "audit-reader")


def audit_config_map_name(search: str) -> str:
    return _bounded(search, "audit")


def search_label(search: str) -> str:
    """The search's name as a label value (at most 63 characters)."""
    if len(search) <= MAX_NAME:
        return search
    digest = hashlib.sha256(search.encode()).hexdigest()[:8]
    return f"{search[: MAX_NAME - 9].rstrip('-.')}-{digest}"


def labels(
    search: str, component: str, generation: int | None = None, round: int | None = None
) -> dict[str, str]:
    result = {LABEL_SEARCH: search_label(search), LABEL_COMPONENT: component, LABEL_MANAGED_BY: MANAGER}
    if generation is not None:
        result[LABEL_GENERATION] = str(generation)
    if round is not None:
        result[LABEL_ROUND] = str(round)
    return result


def selector(search: str, component: str, generation: int | None = None, round: int | None = None) -> str:
    return ",".join(f"{k}={v}" for k, v in labels(search, component, generation, round).items())
