"""The objects `sustaindiffusion audit` makes beside a cluster search (pure builders), and the
reader pod's script, run here on a run directory laid out as a claim is."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.audit.findings import FindingsError, from_cluster
from sustaindiffusion.kube.audit_objects import (
    CLI_MANAGER,
    MAX_SCORE_BYTES,
    READER_LIFETIME_SECONDS,
    READER_SCRIPT,
    SCORE_KEY,
    audit_config_map,
    owned_by,
    reader_command,
    reader_pod,
)
from sustaindiffusion.kube.builders import SearchRef
from sustaindiffusion.kube.names import LABEL_COMPONENT, LABEL_MANAGED_BY, audit_config_map_name

SEARCH = SearchRef("portraits", "team-a", "uid-1")


def spec(**execution: Any) -> SustainSearchSpec:
    return SustainSearchSpec.model_validate(
        {
            "prompts": {"inline": ["a photo of a nurse"]},
            "execution": {"artifacts": {"claimName": "results", "path": "/out"}, **execution},
        }
    )


def test_the_reader_pod_mounts_the_claim_read_only_where_the_workers_ran() -> None:
    tolerations = [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}]
    pod = reader_pod(
        SEARCH,
        spec(nodeSelector={"pool": "gpu"}, tolerations=tolerations, imagePullPolicy="Never"),
        "registry.example/worker:1",
    )
    body = pod["spec"]
    (container,) = body["containers"]
    assert container["image"] == "registry.example/worker:1"
    assert container["imagePullPolicy"] == "Never"
    assert container["volumeMounts"] == [{"name": "artifacts", "mountPath": "/out", "readOnly": True}]
    assert body["volumes"][0]["persistentVolumeClaim"] == {"claimName": "results", "readOnly": True}
    # As the worker runs: no token, non-root, read-only root, no capabilities.
    assert body["automountServiceAccountToken"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert body["nodeSelector"] == {"pool": "gpu"}
    assert body["tolerations"] == tolerations
    # It ends itself even if the CLI that made it is killed.
    assert body["activeDeadlineSeconds"] == READER_LIFETIME_SECONDS
    metadata = pod["metadata"]
    assert metadata["namespace"] == "team-a"
    assert metadata["labels"][LABEL_MANAGED_BY] == CLI_MANAGER
    assert metadata["labels"][LABEL_COMPONENT] == "audit-reader"  # not a worker: the operator ignores it
    (owner,) = metadata["ownerReferences"]
    assert owner["uid"] == "uid-1"
    assert "controller" not in owner


def test_a_search_without_a_claim_has_no_reader_pod() -> None:
    with pytest.raises(ValueError, match="no artifacts claim"):
        reader_pod(SEARCH, SustainSearchSpec.model_validate({"prompts": {"inline": ["a nurse"]}}), "worker:1")


def test_the_audit_config_map_is_owned_by_the_search_and_bounded() -> None:
    long = SearchRef("s" * 200, "team-a", "uid-2")
    made = audit_config_map(long, {"run": {"search": long.name}})
    assert len(made["metadata"]["name"]) <= 63
    assert made["metadata"]["name"] == audit_config_map_name(long.name)
    assert json.loads(made["data"][SCORE_KEY]) == {"run": {"search": long.name}}
    assert owned_by(made, "uid-2")
    assert not owned_by(made, "uid-1")
    with pytest.raises(ValueError, match="more than a ConfigMap holds"):
        audit_config_map(SEARCH, {"padding": "x" * MAX_SCORE_BYTES})


def test_a_score_of_another_search_of_the_same_name_is_refused() -> None:
    text = json.dumps({"run": {"search": "portraits", "uid": "old-uid"}, "points": []})
    with pytest.raises(FindingsError, match="audit this search again"):
        from_cluster(text, "ConfigMap team-a/portraits-audit", "portraits", "uid-1")
    assert from_cluster(text, "here", "portraits", "old-uid").source == "here"
    with pytest.raises(FindingsError, match="is not an audit score"):
        from_cluster("{", "here", "portraits", "uid-1")


def run_reader(root: Path, mode: str, *arguments: str) -> subprocess.CompletedProcess[bytes]:
    command = reader_command(str(root), mode, list(arguments))
    assert command[:2] == ["python3", "-c"]
    return subprocess.run([sys.executable, *command[1:]], capture_output=True, check=False)


def test_the_reader_script_lists_and_tars_files_under_the_root(tmp_path: Path) -> None:
    root = tmp_path / "claim" / "portraits"
    files = (
        "generation-0000/c1/images.jsonl",
        "generation-0000/c1/p000-i000.png",
        "generation-0002/c1/images-from-001.jsonl",
        "generation-0000/c2/images.jsonl",
    )
    for relative in files:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(relative.encode() + b"\x00\xff")  # binary content
    listed = run_reader(root, "list", "generation-*/c1/*")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == [
        "generation-0000/c1/images.jsonl",
        "generation-0000/c1/p000-i000.png",
        "generation-0002/c1/images-from-001.jsonl",
    ]
    wanted = ["generation-0000/c1/p000-i000.png", "generation-0002/c1/images-from-001.jsonl"]
    packed = run_reader(root, "tar", *wanted)
    assert packed.returncode == 0, packed.stderr
    with tarfile.open(fileobj=io.BytesIO(packed.stdout), mode="r:") as archive:
        assert archive.getnames() == wanted
        member = archive.extractfile(wanted[0])
        assert member is not None
        assert member.read() == wanted[0].encode() + b"\x00\xff"
    gone = run_reader(tmp_path / "claim" / "other", "list", "*")
    assert gone.returncode != 0
    assert b"did the search save its artifacts there?" in gone.stderr
    assert READER_SCRIPT.count("import") == 1  # the standard library only: any python3 image runs it
