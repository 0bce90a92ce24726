"""Reading files from a search's artifacts claim, from outside the cluster: a reader pod
(`audit_objects.reader_pod`) mounts the claim read-only, and exec streams what is asked for.

Exec, not a results channel: the claim is the only place the images are, it may be ReadWriteOnce,
and the user who audits has the namespace's pod rights anyway. Files come back as a tar stream
(binary websocket frames), spooled to disk and unpacked with tarfile's `data` filter (no links out,
no absolute paths, no devices) into a local directory laid out as the claim is.
"""

from __future__ import annotations

import json
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream

from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.kube.api import read_json
from sustaindiffusion.kube.audit_objects import (
    READER_CONTAINER,
    artifacts_root,
    reader_command,
    reader_pod,
)
from sustaindiffusion.kube.builders import SearchRef

FILES_PER_EXEC = 200  # keeps each command line far below the kernel's argument limit
START_TIMEOUT_SECONDS = 300  # a fresh node may pull the image first


class ClaimReadError(RuntimeError):
    """The claim could not be read: the message says what the pod or the exec reported."""


def _pod_problem(pod: dict[str, Any]) -> str | None:
    """Why a pod (as JSON) that is not running will not run, if its status says so."""
    status = pod.get("status") or {}
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting and waiting.get("reason") in {
            "ErrImagePull",
            "ImagePullBackOff",
            "ErrImageNeverPull",
            "InvalidImageName",
            "CreateContainerConfigError",
            "CreateContainerError",
        }:
            return f"{waiting['reason']}: {waiting.get('message') or ''}".strip()
    if status.get("phase") in {"Failed", "Succeeded"}:
        why = status.get("reason") or status.get("message") or ""
        return f"the reader pod ended ({status['phase']}: {why})"
    return None


def _running(pod: dict[str, Any]) -> bool:
    return bool((pod.get("status") or {}).get("phase") == "Running")


class ClaimReader:
    """A running reader pod, and the files it can give."""

    def __init__(
        self, core: client.CoreV1Api, search: SearchRef, spec: SustainSearchSpec, pod_name: str
    ) -> None:
        self.core, self.search, self.pod_name = core, search, pod_name
        self.root = artifacts_root(search, spec)

    def _run(self, mode: str, arguments: Sequence[str], sink: Any) -> None:
        """Run the reader script in the pod; its stdout goes to `sink` (bytes)."""
        try:
            response = stream(
                self.core.connect_get_namespaced_pod_exec,
                self.pod_name,
                self.search.namespace,
                container=READER_CONTAINER,
                command=reader_command(self.root, mode, list(arguments)),
                stdout=True,
                stderr=True,
                stdin=False,
                tty=False,
                binary=True,
                _preload_content=False,
            )
        except ApiException as error:  # the handshake: 403 without the pods/exec right
            raise ClaimReadError(
                f"cannot exec in the reader pod {self.search.namespace}/{self.pod_name}: {error.status} "
                f"{error.reason} (the audit needs `create` on pods/exec)"
            ) from None
        errors = b""
        try:
            while response.is_open():
                response.update(timeout=5)
                if response.peek_stdout():
                    sink.write(response.read_stdout())
                if response.peek_stderr():
                    errors += response.read_stderr()
            sink.write(response.read_stdout())
            errors += response.read_stderr()
            code = response.returncode
        finally:
            response.close()
        if code != 0:
            said = errors.decode(errors="replace").strip().splitlines()
            raise ClaimReadError(
                f"reading {self.root} in pod {self.search.namespace}/{self.pod_name} failed (exit {code}): "
                f"{said[-1] if said else 'no message'}"
            )

    def list(self, patterns: Sequence[str]) -> list[str]:
        """The files under the artifacts root matching the glob patterns, relative to it."""
        with tempfile.TemporaryFile() as spool:
            self._run("list", patterns, spool)
            spool.seek(0)
            found: list[str] = json.loads(spool.read() or b"[]")
        return found

    def fetch(self, paths: Sequence[str], into: Path) -> None:
        """Copy the files (relative to the artifacts root) into `into`, at the same relative paths."""
        into.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(paths), FILES_PER_EXEC):
            with tempfile.TemporaryFile() as spool:
                self._run("tar", paths[start : start + FILES_PER_EXEC], spool)
                spool.seek(0)
                with tarfile.open(fileobj=spool, mode="r:") as archive:
                    archive.extractall(into, filter="data")


def _wait_running(core: client.CoreV1Api, namespace: str, name: str, timeout: float) -> None:
    """Until the pod runs (watched, not polled), or says it never will, or `timeout` passes."""
    deadline = time.monotonic() + timeout
    pod = read_json(core.read_namespaced_pod, name, namespace)
    while not _running(pod):
        problem = _pod_problem(pod)
        if problem is not None:
            raise ClaimReadError(f"the reader pod {namespace}/{name} cannot run: {problem}")
        left = deadline - time.monotonic()
        if left <= 0:
            phase = (pod.get("status") or {}).get("phase")
            raise ClaimReadError(
                f"the reader pod {namespace}/{name} did not start in {timeout:.0f} s (phase {phase}); "
                f"`kubectl describe pod -n {namespace} {name}` says why"
            )
        watcher = watch.Watch()  # type: ignore[no-untyped-call]
        for event in watcher.stream(  # type: ignore[no-untyped-call]
            core.list_namespaced_pod,
            namespace,
            field_selector=f"metadata.name={name}",
            resource_version=pod["metadata"]["resourceVersion"],
            timeout_seconds=max(1, int(min(left, 30))),
        ):
            pod = event["raw_object"]
            if _running(pod) or _pod_problem(pod) is not None:
                watcher.stop()  # type: ignore[no-untyped-call]
        if not _running(pod) and _pod_problem(pod) is None:
            pod = read_json(core.read_namespaced_pod, name, namespace)


@contextmanager
def claim_reader(
    core: client.CoreV1Api,
    search: SearchRef,
    spec: SustainSearchSpec,
    image: str,
    start_timeout: float = START_TIMEOUT_SECONDS,
) -> Iterator[ClaimReader]:
    """A reader pod for the search's claim, deleted on the way out (it also ends itself later)."""
    manifest: Any = reader_pod(search, spec, image)
    name = manifest["metadata"]["name"]
    try:
        core.create_namespaced_pod(search.namespace, manifest)
    except ApiException as error:
        if error.status != 409:
            raise ClaimReadError(
                f"cannot create the reader pod {search.namespace}/{name}: {error.status} {error.reason}"
            ) from None
        # One left by an earlier, interrupted export: it reads the same claim the same way.
    reader = ClaimReader(core, search, spec, name)
    try:
        _wait_running(core, search.namespace, name, start_timeout)
        yield reader
    finally:
        try:
            core.delete_namespaced_pod(name, search.namespace, grace_period_seconds=0)
        except ApiException as error:
            if error.status != 404:
                raise
