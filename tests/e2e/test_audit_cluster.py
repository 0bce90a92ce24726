"""A cluster search's audit on a real API server: the score goes into a ConfigMap owned by the
search, `report --search` shows it, and neither a search without saved images nor a search made
again under the audited one's name gets another's figures. (The copy of images out of the
artifacts claim through a reader pod needs a real kubelet: the container suite runs it.)"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from sustaindiffusion.api.resource import API_VERSION, GROUP, KIND, PLURAL, VERSION
from sustaindiffusion.kube.audit_objects import SCORE_KEY, audit_config_map
from sustaindiffusion.kube.builders import SearchRef
from sustaindiffusion.kube.names import audit_config_map_name
from sustaindiffusion.local.cli import main
from sustaindiffusion.local.cluster import publish_audit
from tests.support.controlplane import ControlPlane
from tests.support.spec_cases import BASE_SPEC


def create_search(api_client: client.ApiClient, namespace: str, name: str, spec: dict[str, Any]) -> str:
    body: Any = client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        {"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": name}, "spec": spec},
    )
    return str(body["metadata"]["uid"])


def score_of(search: str, uid: str | None) -> dict[str, Any]:
    """A scored audit as `audit score` writes it (the parts the report reads)."""
    verdict = {"raw": 0.5, "rawInterval": [0.3, 0.7], "corrected": 0.4, "interval": [0.2, 0.6]}
    bias = verdict | {"conclusive": True, "note": ""}
    kappa = {"value": 0.8, "items": 30, "conclusive": True, "note": ""}
    return {
        "run": {"search": search, "uid": uid, "directory": "claim results:/out/" + search},
        "items": 40,
        "labelled": 40,
        "annotators": {"alice": 40},
        "rules": {
            "minimumAgreementImages": 20,
            "minimumEvidence": 10,
            "maximumIntervalWidth": 0.5,
            "level": 0.95,
            "draws": 500,
        },
        "points": [
            {
                "candidateId": "defaults",
                "role": "defaults",
                "images": 56,
                "audited": 40,
                "labelled": 40,
                "genderBias": bias,
                "ethnicBias": bias,
            }
        ],
        "detectorVsPeople": {"people": {q: kappa for q in ("person", "gender", "ethnicity")}},
        "betweenAnnotators": {"pairs": []},
        "personGate": {"enabled": True, "precision": 0.9, "recall": 0.95, "images": 40, "note": "n"},
        "confusion": {q: {"categories": ["a"], "counts": [[1]]} for q in ("person", "gender", "ethnicity")},
    }


@pytest.mark.usefixtures("crd_installed")
def test_a_cluster_audit_is_published_beside_its_search_and_only_its_search_reads_it(
    control_plane: ControlPlane,
    api_client: client.ApiClient,
    namespace: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kubeconfig = str(control_plane.kubeconfig)
    cluster = ["--namespace", namespace, "--kubeconfig", kubeconfig]
    core = client.CoreV1Api(api_client)

    # A search that keeps no images cannot be audited: said before any pod is made.
    create_search(api_client, namespace, "no-images", BASE_SPEC)
    out = tmp_path / "refused"
    command = ["audit", "export", "--search", "no-images", *cluster]
    assert main([*command, "--out", str(out)]) == 2
    assert "did not keep its images (spec.execution.artifacts is absent)" in capsys.readouterr().err
    assert not out.exists()
    assert not core.list_namespaced_pod(namespace).items
    unsaved = copy.deepcopy(BASE_SPEC) | {
        "execution": {"artifacts": {"claimName": "results", "saveImages": False}}
    }
    create_search(api_client, namespace, "unsaved", unsaved)
    command[3] = "unsaved"
    assert main([*command, "--out", str(out)]) == 2
    assert "has saveImages: false" in capsys.readouterr().err

    # The score of the search with this uid: published into its ConfigMap, owned by it.
    saved = copy.deepcopy(BASE_SPEC) | {"execution": {"artifacts": {"claimName": "results"}}}
    uid = create_search(api_client, namespace, "audited", saved)
    with pytest.raises(LookupError, match="not the audited one"):
        publish_audit("audited", namespace, "other", score_of("audited", "other"), Path(kubeconfig))
    assert publish_audit("audited", namespace, uid, score_of("audited", uid), Path(kubeconfig)).endswith(
        audit_config_map_name("audited")
    )
    stored = core.read_namespaced_config_map(audit_config_map_name("audited"), namespace)
    assert [owner.uid for owner in stored.metadata.owner_references] == [uid]
    assert json.loads(stored.data[SCORE_KEY])["run"]["uid"] == uid
    # Scoring again replaces it.
    again = score_of("audited", uid) | {"labelled": 39}
    publish_audit("audited", namespace, uid, again, Path(kubeconfig))
    stored = core.read_namespaced_config_map(audit_config_map_name("audited"), namespace)
    assert json.loads(stored.data[SCORE_KEY])["labelled"] == 39

    report = tmp_path / "report"
    command = ["report", "--search", "audited", *cluster]
    assert main([*command, "--out", str(report)]) == 0
    where = f"ConfigMap {namespace}/{audit_config_map_name('audited')}"
    assert f"with the audit in {where}" in capsys.readouterr().err
    page = (report / "index.html").read_text()
    assert "Bias figures checked by people (audit)" in page
    assert "39 of 40 audited" in " ".join(page.split())

    # A search made again under an earlier one's name: the map it does not own is no audit of it.
    earlier = SearchRef("remade", namespace, "uid-of-an-earlier-search")
    stale = audit_config_map(earlier, score_of("remade", earlier.uid))
    core.create_namespaced_config_map(namespace, stale)
    create_search(api_client, namespace, "remade", saved)
    command[2] = "remade"
    assert main([*command, "--out", str(tmp_path / "remade")]) == 0
    assert "with the audit" not in capsys.readouterr().err
    assert "No audit" in (tmp_path / "remade" / "index.html").read_text()
