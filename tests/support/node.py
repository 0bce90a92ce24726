"""A real node for the end-to-end tests: the kubelet built from the pinned k8s.io/kubernetes module,
with Debian's containerd, runc and CNI plugins. Its pods are containers from real images.

Test infrastructure, not product. What this VM needs, and why each setting is here:

- cgroup v1: kubelet 1.35 refuses it unless `failCgroupV1: false`.
- The VM forbids lowering `oom_score_adj`: containerd's CRI plugin must `restrict_oom_score_adj`
  (without it runc fails with "can't get final child's PID from pipe: EOF").
- No registry is reachable: the sandbox ("pause") image is built here from tests/support/pause and
  imported, as are the project's images (`import_image`); pods use them with a pull policy that
  never pulls (IfNotPresent for a present image, or Never).
- Pod networking: the CNI `bridge` plugin on a bridge of this machine (`BRIDGE`, `POD_SUBNET`),
  host-local addresses. In-cluster clients connect to the `kubernetes` Service's ClusterIP, which a
  kube-proxy would forward; one iptables DNAT rule does the same for that one Service (the control
  plane of such a node serves on every address and its certificate names the ClusterIP).

The containerd root (images and their unpacked layers) lives in a cache outside the repository, so
an image imported once is reused by later runs; everything else lives under the node's workdir.
`stop()` deletes the node's pods through the API (the kubelet tears their sandboxes down: network
namespaces, veths, addresses), then stops the kubelet and containerd, kills what is left of
containers, unmounts what is left under the node's directories, removes the bridge and the rule,
and undoes what the kubelet changed on the machine (`HostChanges`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shlex
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client
from kubernetes import config as kube_config

from tests.support.controlplane import KUBERNETES_SERVICE_IP, REPO_ROOT, ControlPlane
from tests.support.images import BuiltImage
from tests.support.processes import ManagedProcess, wait_until, wait_while_running
from tests.support.slots import free_port

BRIDGE = "sdtest0"
POD_SUBNET = "10.244.7.0/24"
GATEWAY = "10.244.7.1"  # the bridge's address: the node's IP, and where pods reach the API server
NODE_NAME = "sd-node"
PAUSE_IMAGE = "localhost/sustaindiffusion/pause:test"
CRI_NAMESPACE = "k8s.io"  # the containerd namespace the CRI plugin keeps its images and containers in
CONTAINERD_ROOT_ENV = "SUSTAINDIFFUSION_CONTAINERD_ROOT"
NODE_READY_TIMEOUT_S = 180
PAUSE_SOURCE = REPO_ROOT / "tests" / "support" / "pause" / "main.go"


def default_containerd_root() -> Path:
    configured = os.environ.get(CONTAINERD_ROOT_ENV)
    if configured:
        return Path(configured)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "sustaindiffusion" / "containerd"


def missing_prerequisites(kubelet: Path) -> list[str]:
    """What this machine lacks to run the node (empty when it can)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (the kubelet and containerd run as root)")
    for tool, package in [
        ("containerd", "containerd"),
        ("ctr", "containerd"),
        ("runc", "runc"),
        ("iptables", "iptables"),
        ("ip", "iproute2"),
        ("go", "Go"),
    ]:
        if shutil.which(tool) is None:
            missing.append(f"{tool} (Debian package {package})")
    if not Path("/usr/lib/cni/bridge").exists():
        missing.append("/usr/lib/cni/bridge (Debian package containernetworking-plugins)")
    if not os.access(kubelet, os.X_OK):
        missing.append(f"{kubelet} (hack/build-binaries.sh builds it)")
    return missing


def oci_archive_of_one_file(path: Path, name: str, entrypoint: str) -> bytes:
    """An OCI image archive (index.json, blobs) holding one executable, named `name` for containerd."""
    layer_buffer = io.BytesIO()
    with tarfile.open(fileobj=layer_buffer, mode="w") as layer_tar:
        info = layer_tar.gettarinfo(str(path), arcname=entrypoint.lstrip("/"))
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0
        info.mode = 0o755
        with path.open("rb") as data:
            layer_tar.addfile(info, data)
    layer = layer_buffer.getvalue()
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": [entrypoint], "User": "65535:65535"},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }
    ).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest,
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": manifest_digest,
                    "size": len(manifest),
                    "annotations": {"io.containerd.image.name": name},
                }
            ],
        }
    ).encode()
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as out:
        entries = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)]
        entries += [
            (f"blobs/sha256/{digest.split(':')[1]}", blob)
            for digest, blob in [(layer_digest, layer), (config_digest, config), (manifest_digest, manifest)]
        ]
        for arcname, blob in entries:
            info = tarfile.TarInfo(arcname)
            info.size = len(blob)
            out.addfile(info, io.BytesIO(blob))
    return archive.getvalue()


def _run(argv: list[str], *, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


# Kernel settings the kubelet sets at start (protectKernelDefaults false), put back afterwards.
KUBELET_SYSCTLS = (
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
IPTABLES = tuple(
    (command, table) for command in ("iptables", "ip6tables") for table in ("filter", "nat", "mangle")
)
CGROUP_V1_ROOT = Path("/sys/fs/cgroup")


class HostChanges:
    """What the kubelet changes on this machine: kernel settings, its iptables chains (KUBE-*) and
    its pod cgroups (kubepods). `record()` before it starts; `restore()` undoes what was not there."""

    def __init__(self) -> None:
        self.sysctls: dict[str, str] = {}
        self.chains: dict[tuple[str, str], set[str]] = {}
        self.cgroups: set[Path] = set()

    def record(self) -> None:
        for key in KUBELET_SYSCTLS:
            with contextlib.suppress(OSError):
                self.sysctls[key] = (Path("/proc/sys") / key).read_text().strip()
        for command, table in IPTABLES:
            self.chains[command, table] = set(self._chains(command, table))
        self.cgroups = set(CGROUP_V1_ROOT.glob("*/kubepods"))

    def restore(self) -> None:
        for key, value in self.sysctls.items():
            with contextlib.suppress(OSError):
                (Path("/proc/sys") / key).write_text(value)
        for (command, table), before in self.chains.items():
            added = set(self._chains(command, table)) - before
            if not added:
                continue
            # Rules that jump to an added chain go first, then the chains themselves.
            for rule in _run([command, "-t", table, "-S"], check=False).stdout.splitlines():
                words = shlex.split(rule)
                if words[:1] == ["-A"] and any(w in added for w in words[2:]) and words[1] not in added:
                    _run([command, "-t", table, "-D", *words[1:]], check=False)
            for chain in added:
                _run([command, "-t", table, "-F", chain], check=False)
            for chain in added:
                _run([command, "-t", table, "-X", chain], check=False)
        for top in set(CGROUP_V1_ROOT.glob("*/kubepods")) - self.cgroups:
            for directory in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()

    @staticmethod
    def _chains(command: str, table: str) -> list[str]:
        listed = _run([command, "-t", table, "-S"], check=False).stdout.splitlines()
        return [line.split()[1] for line in listed if line.startswith("-N KUBE-")]


class ContainerNode:
    """One Ready node whose pods run as containers. Start with `start()`, finish with `stop()`."""

    def __init__(self, plane: ControlPlane, workdir: Path, containerd_root: Path | None = None) -> None:
        self.plane = plane
        self.workdir = workdir
        self.containerd_root = containerd_root or default_containerd_root()
        self.kubelet_binary = plane.binaries.kubectl.parent / "kubelet"
        self.socket = workdir / "containerd" / "containerd.sock"
        self.processes: list[ManagedProcess] = []
        self._dnat_rule: list[str] | None = None
        self._bridge_created = False
        self._host_changes = HostChanges()

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        missing = missing_prerequisites(self.kubelet_binary)
        if missing:
            raise RuntimeError(f"the container node needs: {'; '.join(missing)}")
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._host_changes.record()
        self._create_bridge()
        self._forward_kubernetes_service()
        self._start_containerd()
        self._import_pause_image()
        self._start_kubelet()

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._delete_pods()
        for process in reversed(self.processes):
            if process.name == "kubelet":
                process.stop()
        with contextlib.suppress(Exception):
            self._kill_containers()
        for process in reversed(self.processes):
            if process.name != "kubelet":
                process.stop()
        self.processes.clear()
        self._kill_shims()
        self._unmount_under(self.workdir)
        self._unmount_under(self.containerd_root)
        if self._dnat_rule is not None:
            _run(["iptables", "-t", "nat", "-D", *self._dnat_rule], check=False)
            self._dnat_rule = None
        if self._bridge_created:
            _run(["ip", "link", "delete", BRIDGE], check=False)
            self._bridge_created = False
        self._host_changes.restore()

    # -- images --------------------------------------------------------------------------------

    def ctr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return _run(
            ["ctr", "--address", str(self.socket), "--namespace", CRI_NAMESPACE, *args], timeout=timeout
        )

    def image_digests(self) -> dict[str, str]:
        """Image name → manifest (or index) digest, as containerd holds them."""
        listed = self.ctr("images", "list").stdout.splitlines()[1:]
        return {line.split()[0]: line.split()[2] for line in listed if line.strip()}

    def import_image(self, image: BuiltImage, name: str) -> float:
        """Import a built image as `name` unless containerd already holds that very image; only the
        blobs containerd lacks are sent (a project change: one small layer). Returns the seconds
        the import took (0 when it was already there).

        The new image is imported under a staging name of its own and given `name` only once it
        is unpacked: replacing `name` first leaves the old image to containerd's garbage collector,
        which can then delete the snapshots of the layers both share while the new one is being
        unpacked on them ("parent snapshot ... does not exist"). Should a snapshot be missing all
        the same (a run killed while it unpacked, two containerds on the cache at once), the
        namespace's images and snapshots are removed (the blobs stay, so nothing is sent again),
        the pause image is imported again, and the import is tried once more, unpacking afresh."""
        started = time.monotonic()
        try:
            return self._import(image, name, started)
        except RuntimeError as error:
            if "parent snapshot" not in str(error):
                raise
            print(f"containerd's snapshots are inconsistent ({str(error)[-300:]}); unpacking afresh")
            self._drop_images_and_snapshots()
            self.ctr("images", "import", str(self._pause_archive), timeout=300)
            return self._import(image, name, started)

    def prune_images(self, keep: Iterable[str]) -> list[str]:
        """Remove every image record but the named images (and the pause image), then let
        containerd collect what only they held. The containerd root is a cache kept between runs:
        a rebuilt image replaces its name, but the CRI plugin's own records of the old one (by
        image id and by repo digest) keep its blobs and unpacked snapshots, gigabytes each time a
        dependency changes. Returns the references removed."""
        held = self.image_digests()
        wanted = {held[name] for name in (*keep, PAUSE_IMAGE) if name in held}
        stale = sorted(ref for ref, digest in held.items() if digest not in wanted)
        if stale:
            self.ctr("images", "rm", "--sync", *stale, timeout=600)
        return stale

    def _drop_images_and_snapshots(self) -> None:
        base = ["ctr", "--address", str(self.socket), "--namespace", CRI_NAMESPACE]
        for line in self.ctr("images", "list", "--quiet").stdout.split():
            _run([*base, "images", "rm", line], check=False)
        # Children before parents: each pass removes what nothing depends on, until none is left
        # or a pass removes nothing (a snapshot in use stays).
        previous: list[str] = []
        while True:
            listed = [line.split() for line in self.ctr("snapshots", "list").stdout.splitlines()[1:]]
            keys = {fields[0] for fields in listed if fields}
            parents = {fields[1] for fields in listed if len(fields) > 2}
            leaves = sorted(keys - parents)
            if not leaves or leaves == previous:
                return
            for key in leaves:
                _run([*base, "snapshots", "rm", key], check=False)
            previous = leaves

    def _import(self, image: BuiltImage, name: str, started: float) -> float:
        wanted = image.manifest_digest()
        if self.image_digests().get(name) == wanted:
            return 0.0
        staging = f"{name.rpartition(':')[0]}:import-{wanted.removeprefix('sha256:')[:12]}"
        listed = self.ctr("content", "list").stdout.splitlines()[1:]
        held = {line.split()[0] for line in listed if line.strip()}
        archive = subprocess.Popen(
            image.archive_command(staging, held & set(image.blobs())), stdout=subprocess.PIPE
        )
        try:
            imported = subprocess.run(
                ["ctr", "--address", str(self.socket), "--namespace", CRI_NAMESPACE,
                 "images", "import", "--all-platforms", "-"],
                stdin=archive.stdout, capture_output=True, text=True, timeout=1800, check=False,
            )  # fmt: skip
        finally:
            assert archive.stdout is not None
            archive.stdout.close()
            archive.wait(timeout=60)
        if archive.returncode != 0 or imported.returncode != 0:
            raise RuntimeError(f"importing {name} failed: {imported.stderr[-2000:]}")
        if self.image_digests().get(staging) != wanted:
            raise RuntimeError(f"containerd holds no image {staging} of digest {wanted} after the import")
        self.ctr("images", "tag", "--force", staging, name)
        self.ctr("images", "rm", staging)
        if self.image_digests().get(name) != wanted:
            raise RuntimeError(f"containerd holds no image {name} of digest {wanted} after the import")
        return time.monotonic() - started

    # -- pieces --------------------------------------------------------------------------------

    def _create_bridge(self) -> None:
        if _run(["ip", "link", "show", BRIDGE], check=False).returncode != 0:
            _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
            self._bridge_created = True
        _run(["ip", "addr", "replace", f"{GATEWAY}/{POD_SUBNET.split('/')[1]}", "dev", BRIDGE])
        _run(["ip", "link", "set", BRIDGE, "up"])

    def _forward_kubernetes_service(self) -> None:
        rule = [
            "PREROUTING",
            "-s", POD_SUBNET,
            "-d", KUBERNETES_SERVICE_IP,
            "-p", "tcp",
            "--dport", "443",
            "-j", "DNAT",
            "--to-destination", f"{GATEWAY}:{self.plane.api_port}",
        ]  # fmt: skip
        _run(["iptables", "-t", "nat", "-A", *rule])
        self._dnat_rule = rule

    def _start_containerd(self) -> None:
        state = self.workdir / "containerd"
        cni = self.workdir / "cni"
        for directory in (state, cni, self.containerd_root):
            directory.mkdir(parents=True, exist_ok=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": "sustaindiffusion-test",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_SUBNET, "gateway": GATEWAY}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": str(self.workdir / "ipam"),
                    },
                }
            ],
        }
        (cni / "10-sustaindiffusion.conflist").write_text(json.dumps(conflist, indent=2))
        cri = '[plugins."io.containerd.grpc.v1.cri"]'
        config = f"""version = 2
root = "{self.containerd_root}"
state = "{state / "state"}"
[grpc]
  address = "{self.socket}"
[ttrpc]
  address = "{self.socket}.ttrpc"
[debug]
  level = "info"
{cri}
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  enable_selinux = false
{cri[:-1]}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{cni}"
{cri[:-1]}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
{cri[:-1]}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
"""
        config_path = state / "config.toml"
        config_path.write_text(config)
        process = ManagedProcess(
            "containerd", ["containerd", "--config", str(config_path)], self.workdir / "containerd.log"
        )
        self.processes.append(process)

        wait_while_running(
            process,
            lambda: self.socket.exists() and self.ctr("version").returncode == 0,
            60,
            what="containerd to serve",
        )

    def _import_pause_image(self) -> None:
        binary = self.workdir / "pause"
        subprocess.run(
            ["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(binary), str(PAUSE_SOURCE)],
            check=True,
            capture_output=True,
            env={**os.environ, "CGO_ENABLED": "0"},
            cwd=self.workdir,
            timeout=300,
        )
        self._pause_archive.write_bytes(oci_archive_of_one_file(binary, PAUSE_IMAGE, "/pause"))
        self.ctr("images", "import", str(self._pause_archive), timeout=300)  # a few MB: sent whole

    @property
    def _pause_archive(self) -> Path:
        return self.workdir / "pause.tar"

    def _start_kubelet(self) -> None:
        root = self.workdir / "kubelet"
        root.mkdir(parents=True, exist_ok=True)
        assert self.plane.certs is not None
        config: dict[str, Any] = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,  # this VM has cgroup v1
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "failSwapOn": False,
            "address": GATEWAY,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            # The API server reads pod logs from the kubelet without a client certificate of its own.
            "authentication": {
                "anonymous": {"enabled": True},
                "webhook": {"enabled": False},
                "x509": {"clientCAFile": str(self.plane.certs.ca_cert)},
            },
            "authorization": {"mode": "AlwaysAllow"},
            "resolvConf": "/etc/resolv.conf",
            "volumePluginDir": str(root / "volume-plugins"),
            # This machine's disk and memory are the tests' business: never evict or collect images.
            "evictionHard": {
                "memory.available": "64Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "serializeImagePulls": False,
            "nodeStatusUpdateFrequency": "4s",
            "syncFrequency": "5s",
            "fileCheckFrequency": "5s",
        }
        config_path = root / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        process = ManagedProcess(
            "kubelet",
            [
                str(self.kubelet_binary),
                f"--config={config_path}",
                f"--kubeconfig={self.plane.kubeconfig}",
                f"--root-dir={root}",
                f"--cert-dir={root / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={GATEWAY}",
                "--v=1",
            ],
            self.workdir / "kubelet.log",
        )
        self.processes.append(process)

        def ready() -> bool:
            with self._core() as core:
                node = core.read_node(NODE_NAME)
            conditions = node.status.conditions or []
            return any(c.type == "Ready" and c.status == "True" for c in conditions)

        wait_while_running(
            process, ready, NODE_READY_TIMEOUT_S, interval=1.0, what=f"node {NODE_NAME} to be Ready"
        )

    @contextlib.contextmanager
    def _core(self) -> Any:
        api = kube_config.new_client_from_config(config_file=str(self.plane.kubeconfig))
        try:
            yield client.CoreV1Api(api)
        finally:
            api.close()

    def _delete_pods(self) -> None:
        """Delete every pod on the node and wait until the kubelet has confirmed each deletion."""
        selector = f"spec.nodeName={NODE_NAME}"
        with self._core() as core:
            for pod in core.list_pod_for_all_namespaces(field_selector=selector).items:
                with contextlib.suppress(client.ApiException):
                    core.delete_namespaced_pod(
                        pod.metadata.name, pod.metadata.namespace, grace_period_seconds=2
                    )
            wait_until(
                lambda: not core.list_pod_for_all_namespaces(field_selector=selector).items,
                90,
                interval=1.0,
                what=f"the pods on {NODE_NAME} to be deleted",
            )

    def _kill_containers(self) -> None:
        """Whatever the kubelet left running (sandboxes it had no time to stop) is killed here."""
        for task in self.ctr("tasks", "list", "--quiet").stdout.split():
            self.ctr("tasks", "kill", "--signal", "SIGKILL", task)
            with contextlib.suppress(subprocess.CalledProcessError):
                self.ctr("tasks", "delete", "--force", task)
        for container in self.ctr("containers", "list", "--quiet").stdout.split():
            with contextlib.suppress(subprocess.CalledProcessError):
                self.ctr("containers", "delete", container)

    def _kill_shims(self) -> None:
        marker = str(self.socket)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(marker.encode() in word for word in argv) and b"containerd-shim" in argv[0]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry.name), 9)

    @staticmethod
    def _unmount_under(directory: Path) -> None:
        prefix = str(directory.resolve()) + "/"
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
            _run(["umount", "--lazy", mount], check=False)
