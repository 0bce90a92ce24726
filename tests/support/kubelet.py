"""A test kubelet: one fake GPU node whose pods run as local processes.

It is test infrastructure, not product. It registers one Ready Node (cpu, memory, pods and
`nvidia.com/gpu` capacity), keeps its Lease renewed, and for every pod the real scheduler binds
to that node it:

1. materialises the pod's `configMap`, `secret`, `emptyDir` and `downwardAPI` volumes as
   directories under `<root>/<namespace>_<pod>/volumes/<volume>`;
2. resolves the container's environment as a kubelet does (`value` with `$(VAR)` expansion,
   `configMapKeyRef`, `secretKeyRef`, `fieldRef`, `envFrom`);
3. runs the container's `command` + `args` (the image is ignored; the command must exist on
   this machine) with that environment, in a new process group, logging to `container.log`;
4. reports Running, then Succeeded or Failed with the exit code and the termination message;
5. kills the process group when the pod is deleted (then confirms the deletion, as a kubelet
   must) or when the pod's `activeDeadlineSeconds` passes.

Path mapping (the process is not in a container, so absolute container paths do not exist):
each volume mount and the termination-message path get a host path under the pod's
directory `<pod>/rootfs/<container path>`. Every command word, argument, environment value and
the working directory that equals a container path or starts with `<container path>/` is
rewritten to the host path. The container's view stays true for anything it is told.

Each pod gets its own loopback address (127.<slot>.x.y, `slots.pod_ip`) as its pod IP, for servers
that bind to it.

Only pods with exactly one container are run; others are failed with reason
`TestKubeletUnsupported`. Restart policies Never, OnFailure and Always are honoured.

Service-account tokens: a projected volume with a `serviceAccountToken` source (what admission adds
to pods that automount a token) gets a real token from the TokenRequest API, bound to the pod, with
`ca.crt` and `namespace` beside it, and the pod gets KUBERNETES_SERVICE_HOST and _PORT. Clients read
the token from its absolute path, so such a pod runs in its own mount namespace (util-linux
`unshare`, root only) where the volume is bind-mounted at its mount path: an in-cluster client
(the operator installed by Helm) then authenticates as its service account, as in a cluster.

Fault injection, for tests of failure handling: a function in `faults` that returns
`(exit code, reason)` for a pod makes that pod end so, without running it, as a node would
report an OOM-killed container; `(exit code, reason, message)` also leaves that termination message
(at most 4096 bytes, as Kubernetes keeps), so a pod can "succeed" with any report at all. A
function in `programs` may substitute the program a pod runs (a stand-in worker for tests that
measure or compare the operator, not the worker). A function in `holds` that returns True for a pod
leaves it Pending, never started (an image that never arrives), until it is deleted.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import logging
import os
import re
import shutil
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.support.processes import ManagedProcess
from tests.support.slots import pod_ip

log = logging.getLogger("test-kubelet")

TERMINATION_MESSAGE_LIMIT = 4096  # bytes per container, as in Kubernetes
LOG_FALLBACK_LINES = 80
LOG_FALLBACK_BYTES = 2048
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

Pod = dict[str, Any]
# What a fault makes of a pod instead of running it: (exit code, reason) or, to leave any termination
# message (a malformed or forged report, say), (exit code, reason, message).
Fault = tuple[int, str] | tuple[int, str, str]


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- pure helpers


_VAR_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


def expand_references(text: str, variables: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: known names are replaced, `$$` escapes, unknown stay as is."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return variables.get(name, match.group(0))

    return _VAR_REFERENCE.sub(substitute, text)


def field_path_value(pod: Pod, field_path: str) -> str:
    """The value of a downward-API `fieldRef.fieldPath` for `pod`."""
    metadata = pod.get("metadata", {})
    spec = pod.get("spec", {})
    status = pod.get("status", {})
    simple = {
        "metadata.name": metadata.get("name"),
        "metadata.namespace": metadata.get("namespace"),
        "metadata.uid": metadata.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": status.get("hostIP", "127.0.0.1"),
        "status.podIP": status.get("podIP", "127.0.0.1"),
    }
    if field_path in simple:
        return str(simple[field_path] or "")
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", field_path)
    if match:
        return str((metadata.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ValueError(f"unsupported fieldRef.fieldPath {field_path!r}")


class PathMapper:
    """Maps container paths (mount paths, the termination-message path) to host paths."""

    def __init__(self, rootfs: Path) -> None:
        self.rootfs = rootfs
        self._prefixes: list[str] = []

    def host_path(self, container_path: str) -> Path:
        return self.rootfs / container_path.lstrip("/")

    def add(self, container_path: str) -> Path:
        normalised = "/" + container_path.strip("/")
        if normalised not in self._prefixes:
            self._prefixes.append(normalised)
            # Longest prefix first, so nested mounts win over their parents.
            self._prefixes.sort(key=len, reverse=True)
        return self.host_path(normalised)

    def rewrite(self, value: str) -> str:
        for prefix in self._prefixes:
            if value == prefix or value.startswith(prefix + "/"):
                return str(self.host_path(prefix)) + value[len(prefix) :]
        return value


def termination_message(message_file: Path, log_file: Path, policy: str, exit_code: int) -> str:
    """What the kubelet reports: the file's content, or the log tail under FallbackToLogsOnError."""
    text = ""
    with contextlib.suppress(OSError):
        text = message_file.read_bytes()[:TERMINATION_MESSAGE_LIMIT].decode(errors="replace")
    if not text and policy == "FallbackToLogsOnError" and exit_code != 0:
        with contextlib.suppress(OSError):
            lines = log_file.read_bytes().splitlines()[-LOG_FALLBACK_LINES:]
            text = b"\n".join(lines)[-LOG_FALLBACK_BYTES:].decode(errors="replace")
    return text


# --------------------------------------------------------------------------- the kubelet


@dataclass
class _RunningPod:
    uid: str
    namespace: str
    name: str
    directory: Path
    process: ManagedProcess | None = None
    restart_count: int = 0
    started_at: float = field(default_factory=time.monotonic)
    stopping: bool = False
    finished: bool = False
    ip: str = "127.0.0.1"


class TestKubelet:
    """Start with `start()`; `stop()` kills every pod process and ends the threads."""

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        api: client.ApiClient,
        root: Path,
        node_name: str = "fake-gpu-node",
        capacity: Mapping[str, str] | None = None,
        labels: Mapping[str, str] | None = None,
        base_env: Mapping[str, str] | None = None,
        first_pod_ip: int = 0,
    ) -> None:
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.root = root
        self.node_name = node_name
        self.capacity = dict(
            capacity or {"cpu": "16", "memory": "64Gi", "pods": "110", "nvidia.com/gpu": "4"}
        )
        self.labels = {
            "kubernetes.io/hostname": node_name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
            **(labels or {}),
        }
        self.base_env = dict(base_env if base_env is not None else _default_base_env())
        self._pods: dict[str, _RunningPod] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watch: watch.Watch | None = None
        self.faults: list[Callable[[Pod], Fault | None]] = []
        # Program substitution, as an image would bring another program: a function that returns
        # a new argv for a pod (or None to leave it) runs that instead of the pod's command.
        self.programs: list[Callable[[Pod, list[str]], list[str] | None]] = []
        self.holds: list[Callable[[Pod], bool]] = []
        # Where this node's pod addresses start (slots.pod_ip): test kubelets of one test run, in
        # clusters of their own, start apart so that no two pods share an address.
        self._next_ip = first_pod_ip
        host = urllib.parse.urlparse(api.configuration.host)
        # What a kubelet gives every pod, from the `kubernetes` Service (here: the API server itself).
        self.service_env = {
            "KUBERNETES_SERVICE_HOST": host.hostname or "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(host.port or 443),
        }

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._register_node()
        for target, name in ((self._watch_pods, "watch"), (self._heartbeat, "heartbeat")):
            thread = threading.Thread(target=target, name=f"test-kubelet-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        with self._lock:
            pods = list(self._pods.values())
        for pod in pods:
            if pod.process is not None:
                pod.process.stop(grace_seconds=2)
        for thread in self._threads:
            thread.join(timeout=10)

    def process_groups(self) -> list[int]:
        with self._lock:
            return [p.process.pid for p in self._pods.values() if p.process is not None]

    # ----------------------------------------------------------------- node

    def _register_node(self) -> None:
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node_name, "labels": self.labels},
            "spec": {},
        }
        with contextlib.suppress(ApiException):
            self.core.create_node(node)
        self._report_node_status()

    def _report_node_status(self) -> None:
        now = _now()
        status = {
            "status": {
                "capacity": self.capacity,
                "allocatable": self.capacity,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "test kubelet is posting ready status",
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    },
                    *[
                        {
                            "type": t,
                            "status": "False",
                            "reason": f"KubeletHasNo{t}",
                            "lastHeartbeatTime": now,
                            "lastTransitionTime": now,
                        }
                        for t in ("MemoryPressure", "DiskPressure", "PIDPressure")
                    ],
                ],
                "addresses": [
                    {"type": "InternalIP", "address": "127.0.0.1"},
                    {"type": "Hostname", "address": self.node_name},
                ],
                "nodeInfo": {
                    "architecture": "amd64",
                    "operatingSystem": "linux",
                    "kubeletVersion": "test-kubelet",
                    "kubeProxyVersion": "",
                    "containerRuntimeVersion": "local-process://1",
                    "kernelVersion": "",
                    "osImage": "test",
                    "bootID": "",
                    "machineID": "",
                    "systemUUID": "",
                },
            }
        }
        self.core.patch_node_status(self.node_name, status)

    def _renew_lease(self) -> None:
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.node_name, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": self.node_name,
                "leaseDurationSeconds": 40,
                "renewTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            },
        }
        try:
            self.coordination.patch_namespaced_lease(
                self.node_name, "kube-node-lease", {"spec": body["spec"]}
            )
        except ApiException as error:
            if error.status != 404:
                raise
            self.coordination.create_namespaced_lease("kube-node-lease", body)

    def _heartbeat(self) -> None:
        while not self._stop.wait(5):
            try:
                self._renew_lease()
                self._report_node_status()
                self._enforce_deadlines()
            except Exception:
                log.exception("heartbeat failed")

    # ----------------------------------------------------------------- pods

    def _watch_pods(self) -> None:
        selector = f"spec.nodeName={self.node_name}"
        while not self._stop.is_set():
            try:
                listing = self.core.list_pod_for_all_namespaces(field_selector=selector)
                for item in listing.items:
                    self._reconcile(self.core.api_client.sanitize_for_serialization(item))
                self._watch = watch.Watch()
                for event in self._watch.stream(
                    self.core.list_pod_for_all_namespaces,
                    field_selector=selector,
                    resource_version=listing.metadata.resource_version,
                    timeout_seconds=60,
                ):
                    if self._stop.is_set():
                        return
                    pod = self.core.api_client.sanitize_for_serialization(event["object"])
                    if event["type"] == "DELETED":
                        self._forget(pod)
                    else:
                        self._reconcile(pod)
            except Exception:
                if not self._stop.is_set():
                    log.exception("pod watch failed; relisting")
                    time.sleep(0.5)

    def _reconcile(self, pod: Pod) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            running = self._pods.get(uid)
        if pod["metadata"].get("deletionTimestamp"):
            self._delete(pod, running)
            return
        phase = pod.get("status", {}).get("phase")
        if running is None and phase in (None, "Pending"):
            self._launch(pod)

    def _forget(self, pod: Pod) -> None:
        with self._lock:
            running = self._pods.pop(pod["metadata"]["uid"], None)
        if running is not None and running.process is not None:
            running.stopping = True
            running.process.stop(grace_seconds=0.5)

    def _delete(self, pod: Pod, running: _RunningPod | None) -> None:
        """Stop the pod's process, report it terminated (a Job waits for that before it replaces
        the pod), then confirm the graceful deletion, as a kubelet does."""
        if running is not None and running.process is not None and not running.stopping:
            running.stopping = True
            grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
            running.process.stop(grace_seconds=min(float(grace or 0), 5.0))
        phase = (pod.get("status") or {}).get("phase")
        if running is not None and not running.finished and phase not in ("Succeeded", "Failed"):
            self._report_terminal(pod, running, exit_code=137, reason="Error", message="")
        with contextlib.suppress(ApiException):
            self.core.delete_namespaced_pod(
                pod["metadata"]["name"],
                pod["metadata"]["namespace"],
                grace_period_seconds=0,
                body=client.V1DeleteOptions(
                    grace_period_seconds=0,
                    preconditions=client.V1Preconditions(uid=pod["metadata"]["uid"]),
                ),
            )

    def _launch(self, pod: Pod) -> None:
        if any(hold(pod) for hold in list(self.holds)):
            return  # stays Pending; each later event of the pod asks again
        meta = pod["metadata"]
        directory = self.root / f"{meta['namespace']}_{meta['name']}_{meta['uid'][:8]}"
        running = _RunningPod(meta["uid"], meta["namespace"], meta["name"], directory)
        with self._lock:
            if meta["uid"] in self._pods:
                return
            self._pods[meta["uid"]] = running
            self._next_ip += 1
            # Each pod its own loopback address, as each pod has its own IP in a cluster.
            running.ip = pod_ip(self._next_ip)
        pod = {**pod, "status": {**(pod.get("status") or {}), "podIP": running.ip}}
        for fault in list(self.faults):
            injected = fault(pod)
            if injected is not None:
                exit_code, reason, message = (*injected, "")[:3]
                self._report_running(pod, running)
                message = message.encode()[:TERMINATION_MESSAGE_LIMIT].decode(errors="ignore")
                self._report_terminal(pod, running, exit_code=exit_code, reason=reason, message=message)
                return
        containers = pod["spec"].get("containers", [])
        if len(containers) != 1:
            self._report_terminal(
                pod,
                running,
                exit_code=128,
                reason="TestKubeletUnsupported",
                message="the test kubelet runs pods with exactly one container",
            )
            return
        try:
            argv, env, cwd, message_file = self._prepare(pod, containers[0], directory)
        except Exception as error:
            self._report_terminal(
                pod, running, exit_code=128, reason="CreateContainerConfigError", message=str(error)
            )
            return
        thread = threading.Thread(
            target=self._run,
            args=(pod, running, argv, env, cwd, message_file),
            name=f"pod-{meta['name']}",
            daemon=True,
        )
        self._threads.append(thread)
        thread.start()

    def _prepare(
        self, pod: Pod, container: dict[str, Any], directory: Path
    ) -> tuple[list[str], dict[str, str], Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        mapper = PathMapper(directory / "rootfs")
        bind_mounts: list[tuple[Path, str]] = []
        volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            volume = volumes.get(mount["name"])
            if volume is None:
                raise ValueError(f"volumeMount {mount['name']!r} names no volume")
            source = self._materialise_volume(pod, volume, directory / "volumes" / volume["name"])
            if source is None:
                continue  # a projected volume without a token: nothing to give a local process
            if mount["mountPath"].startswith(SERVICE_ACCOUNT_DIR):
                bind_mounts.append((source, mount["mountPath"]))
                continue
            target = mapper.add(mount["mountPath"])
            target.parent.mkdir(parents=True, exist_ok=True)
            if mount.get("subPath"):
                source = source / mount["subPath"]
            if not target.exists():
                target.symlink_to(source)

        message_path = container.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH
        message_file = mapper.add(message_path)
        message_file.parent.mkdir(parents=True, exist_ok=True)
        message_file.write_bytes(b"")

        env = dict(self.base_env)
        env.update(self.service_env)
        env.update(self._resolve_env(pod, container))
        env = {k: mapper.rewrite(v) for k, v in env.items()}
        words = [*container.get("command", []), *container.get("args", [])]
        if not words:
            raise ValueError("the test kubelet needs an explicit command (the image is not run)")
        argv = [mapper.rewrite(expand_references(word, env)) for word in words]
        for program in list(self.programs):
            replaced = program(pod, argv)
            if replaced is not None:
                argv = replaced
                break
        if not os.path.isabs(argv[0]):
            resolved = shutil.which(argv[0], path=env.get("PATH"))
            if resolved is None:
                raise ValueError(f"command {argv[0]!r} not found on PATH {env.get('PATH')!r}")
            argv[0] = resolved
        if bind_mounts:
            argv = _in_mount_namespace(bind_mounts, argv)
        working_dir = container.get("workingDir")
        cwd = Path(mapper.rewrite(working_dir)) if working_dir else directory
        if working_dir and not cwd.exists():
            cwd.mkdir(parents=True, exist_ok=True)
        return argv, env, cwd, message_file

    def _materialise_volume(self, pod: Pod, volume: dict[str, Any], target: Path) -> Path | None:
        namespace = pod["metadata"]["namespace"]
        if target.exists():
            return target
        if "emptyDir" in volume:
            target.mkdir(parents=True)
            return target
        if "configMap" in volume:
            spec = volume["configMap"]
            config_map = self.core.read_namespaced_config_map(spec["name"], namespace)
            data = dict(config_map.data or {})
            data.update({k: base64.b64decode(v).decode() for k, v in (config_map.binary_data or {}).items()})
            self._write_items(target, data, spec.get("items"))
            return target
        if "secret" in volume:
            spec = volume["secret"]
            secret = self.core.read_namespaced_secret(spec["secretName"], namespace)
            data = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
            self._write_items(target, data, spec.get("items"))
            return target
        if "downwardAPI" in volume:
            data = {
                item["path"]: field_path_value(pod, item["fieldRef"]["fieldPath"])
                for item in volume["downwardAPI"].get("items", [])
                if "fieldRef" in item
            }
            self._write_items(target, data, None)
            return target
        if "projected" in volume:
            return self._projected(pod, volume["projected"], target)
        raise ValueError(
            f"volume {volume['name']!r}: the test kubelet supports configMap, secret, "
            "emptyDir, downwardAPI and projected service-account tokens only"
        )

    def _projected(self, pod: Pod, projected: dict[str, Any], target: Path) -> Path | None:
        """The service-account token volume: token, ca.crt and namespace files."""
        sources = projected.get("sources", [])
        token_source = next((s["serviceAccountToken"] for s in sources if "serviceAccountToken" in s), None)
        if token_source is None:
            return None
        meta = pod["metadata"]
        request = {
            "spec": {
                "audiences": [token_source["audience"]] if token_source.get("audience") else [],
                "expirationSeconds": int(token_source.get("expirationSeconds", 3607)),
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta["name"],
                    "uid": meta["uid"],
                },
            }
        }
        account = pod["spec"].get("serviceAccountName") or "default"
        token = self.core.create_namespaced_service_account_token(account, meta["namespace"], request)
        files = {token_source.get("path", "token"): token.status.token}
        for source in sources:
            if "configMap" in source:
                data = (
                    self.core.read_namespaced_config_map(source["configMap"]["name"], meta["namespace"]).data
                    or {}
                )
                files.update(
                    {item["path"]: data[item["key"]] for item in source["configMap"].get("items", [])}
                )
            if "downwardAPI" in source:
                for item in source["downwardAPI"].get("items", []):
                    files[item["path"]] = field_path_value(pod, item["fieldRef"]["fieldPath"])
        self._write_items(target, files, None)
        return target

    @staticmethod
    def _write_items(target: Path, data: Mapping[str, str], items: list[dict[str, str]] | None) -> None:
        target.mkdir(parents=True)
        chosen = {item["key"]: item["path"] for item in items} if items else {k: k for k in data}
        for key, relative in chosen.items():
            if key not in data:
                raise ValueError(f"key {key!r} not found")
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(data[key])

    def _resolve_env(self, pod: Pod, container: dict[str, Any]) -> dict[str, str]:
        namespace = pod["metadata"]["namespace"]
        resolved: dict[str, str] = {}
        for source in container.get("envFrom", []):
            prefix = source.get("prefix", "")
            if "configMapRef" in source:
                data = self.core.read_namespaced_config_map(source["configMapRef"]["name"], namespace).data
                resolved.update({prefix + k: v for k, v in (data or {}).items()})
            if "secretRef" in source:
                secret = self.core.read_namespaced_secret(source["secretRef"]["name"], namespace).data
                resolved.update({prefix + k: base64.b64decode(v).decode() for k, v in (secret or {}).items()})
        for variable in container.get("env", []):
            name = variable["name"]
            if "valueFrom" not in variable:
                resolved[name] = expand_references(variable.get("value", ""), resolved)
                continue
            value_from = variable["valueFrom"]
            if "fieldRef" in value_from:
                resolved[name] = field_path_value(pod, value_from["fieldRef"]["fieldPath"])
            elif "configMapKeyRef" in value_from:
                ref = value_from["configMapKeyRef"]
                data = self.core.read_namespaced_config_map(ref["name"], namespace).data or {}
                if ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    raise ValueError(f"configmap {ref['name']!r} has no key {ref['key']!r}")
                resolved[name] = data[ref["key"]]
            elif "secretKeyRef" in value_from:
                ref = value_from["secretKeyRef"]
                secret_data = self.core.read_namespaced_secret(ref["name"], namespace).data or {}
                if ref["key"] not in secret_data:
                    if ref.get("optional"):
                        continue
                    raise ValueError(f"secret {ref['name']!r} has no key {ref['key']!r}")
                resolved[name] = base64.b64decode(secret_data[ref["key"]]).decode()
            else:
                raise ValueError(f"env {name!r}: unsupported valueFrom {sorted(value_from)}")
        return resolved

    def _run(
        self,
        pod: Pod,
        running: _RunningPod,
        argv: list[str],
        env: dict[str, str],
        cwd: Path,
        message_file: Path,
    ) -> None:
        container = pod["spec"]["containers"][0]
        policy = pod["spec"].get("restartPolicy", "Always")
        message_policy = container.get("terminationMessagePolicy", "File")
        log_file = running.directory / "container.log"
        while True:
            running.process = ManagedProcess(container["name"], argv, log_file, env=env, cwd=cwd)
            self._report_running(pod, running)
            exit_code = running.process.popen.wait()
            running.process.stop(grace_seconds=0)
            if running.stopping or self._stop.is_set():
                return
            restart = policy == "Always" or (policy == "OnFailure" and exit_code != 0)
            if not restart:
                break
            running.restart_count += 1
            time.sleep(min(10.0, 0.5 * 2 ** (running.restart_count - 1)))  # crash-loop back-off
        message = termination_message(message_file, log_file, message_policy, exit_code)
        reason = "Completed" if exit_code == 0 else "Error"
        if running.finished:  # deadline enforcement already reported the pod
            return
        self._report_terminal(pod, running, exit_code=exit_code, reason=reason, message=message)

    def _enforce_deadlines(self) -> None:
        with self._lock:
            pods = list(self._pods.values())
        for running in pods:
            if running.finished or running.process is None or not running.process.alive():
                continue
            try:
                pod = self.core.api_client.sanitize_for_serialization(
                    self.core.read_namespaced_pod(running.name, running.namespace)
                )
            except ApiException:
                continue
            deadline = pod["spec"].get("activeDeadlineSeconds")
            if deadline is not None and time.monotonic() - running.started_at > deadline:
                running.finished = running.stopping = True
                running.process.stop(grace_seconds=1)
                self._report_terminal(
                    pod,
                    running,
                    exit_code=137,
                    reason="DeadlineExceeded",
                    message=f"Pod was active on the node longer than the specified deadline ({deadline} s)",
                    pod_reason="DeadlineExceeded",
                )

    def _report_running(self, pod: Pod, running: _RunningPod) -> None:
        now = _now()
        container = pod["spec"]["containers"][0]
        status = {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": running.ip,
            "podIPs": [{"ip": running.ip}],
            "startTime": pod.get("status", {}).get("startTime") or now,
            "conditions": _conditions(pod, ready=True, now=now),
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container.get("image", ""),
                    "imageID": "",
                    "ready": True,
                    "started": True,
                    "restartCount": running.restart_count,
                    "state": {"running": {"startedAt": now}},
                }
            ],
        }
        self._patch_status(running, status)

    def _report_terminal(
        self,
        pod: Pod,
        running: _RunningPod,
        exit_code: int,
        reason: str,
        message: str,
        pod_reason: str | None = None,
    ) -> None:
        running.finished = True
        now = _now()
        container = pod["spec"]["containers"][0] if pod["spec"].get("containers") else {"name": "main"}
        terminated = {"exitCode": exit_code, "reason": reason, "startedAt": now, "finishedAt": now}
        if message:
            terminated["message"] = message
        status: dict[str, Any] = {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "hostIP": "127.0.0.1",
            "podIP": running.ip,
            "startTime": pod.get("status", {}).get("startTime") or now,
            "conditions": _conditions(pod, ready=False, now=now),
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container.get("image", ""),
                    "imageID": "",
                    "ready": False,
                    "started": False,
                    "restartCount": running.restart_count,
                    "state": {"terminated": terminated},
                }
            ],
        }
        if pod_reason:
            status["reason"] = pod_reason
            status["message"] = message
        self._patch_status(running, status)

    def _patch_status(self, running: _RunningPod, status: dict[str, Any]) -> None:
        try:
            self.core.patch_namespaced_pod_status(running.name, running.namespace, {"status": status})
        except ApiException as error:
            if error.status != 404:  # a pod deleted meanwhile has nothing to report to
                log.warning("status of %s/%s not written: %s", running.namespace, running.name, error.reason)


KUBELET_CONDITIONS = ("PodScheduled", "Initialized", "ContainersReady", "Ready")


def _conditions(pod: Pod, ready: bool, now: str) -> list[dict[str, str]]:
    """The kubelet's own conditions, and the pod's others kept (a DisruptionTarget that an
    eviction or preemption added must survive: a Job's pod-failure policy reads it)."""
    value = "True" if ready else "False"
    own = [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
        {"type": "ContainersReady", "status": value, "lastTransitionTime": now},
        {"type": "Ready", "status": value, "lastTransitionTime": now},
    ]
    others = [
        c
        for c in (pod.get("status") or {}).get("conditions") or []
        if c.get("type") not in KUBELET_CONDITIONS
    ]
    return own + others


def _in_mount_namespace(bind_mounts: list[tuple[Path, str]], argv: list[str]) -> list[str]:
    """argv run in a private mount namespace with each (source, container path) bind-mounted."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise ValueError("service-account token volumes need util-linux unshare")
    script = "".join(
        f'mkdir -p "{target}" && mount --bind "{source}" "{target}" && ' for source, target in bind_mounts
    )
    return [unshare, "--mount", "--propagation", "private", "sh", "-c", script + 'exec "$@"', "sh", *argv]


def _default_base_env() -> dict[str, str]:
    """What every pod process inherits from the test run: enough to find Python and its packages."""
    keep = (
        "PATH",
        "HOME",
        "LANG",
        "LC_ALL",
        "TMPDIR",
        "VIRTUAL_ENV",
        "PYTHONPATH",
        "HF_HUB_OFFLINE",
        "OPENBLAS_CORETYPE",
        "OPENBLAS_L2_SIZE",
    )
    return {k: os.environ[k] for k in keep if k in os.environ}
