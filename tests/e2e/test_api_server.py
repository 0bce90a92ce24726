"""The SustainSearch CRD on the real API server: examples accepted, invalid specs refused with the
same field paths and messages as local validation, server defaults equal to pydantic's, field
descriptions in `kubectl explain`, printer columns, and immutable fields."""

from __future__ import annotations

import copy
import functools
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from sustaindiffusion.api.resource import API_VERSION, GROUP, KIND, PLURAL, VERSION
from sustaindiffusion.api.spec import SustainSearchSpec
from sustaindiffusion.api.status import EnergyTotals, EvaluationCounters, Phase, SustainSearchStatus
from sustaindiffusion.api.validation import ManifestError, validate_spec
from sustaindiffusion.local.study import expand, load_arms
from tests.support.controlplane import ControlPlane
from tests.support.processes import wait_until
from tests.support.spec_cases import (
    BASE_SPEC,
    INVALID_CASES,
    VALID_FAMILY_CASES,
    InvalidCase,
    resource_probes,
    valid_family_spec,
)

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
EXAMPLES = sorted(EXAMPLES_DIR.glob("*.yaml")) + sorted((EXAMPLES_DIR / "paper").glob("*.yaml"))


@pytest.fixture
def custom(api_client: client.ApiClient, crd_installed: None) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


def _body(spec: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name or f"s-{uuid.uuid4().hex[:8]}"},
        "spec": spec,
    }


def _create(custom: client.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict"
    )
    return cast(dict[str, Any], created)


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_every_example_is_accepted(custom: client.CustomObjectsApi, namespace: str, example: Path) -> None:
    manifest = yaml.safe_load(example.read_text())
    created = _create(custom, namespace, manifest)
    # The API server defaults the example exactly as local validation does: one source of truth.
    local = SustainSearchSpec.model_validate(manifest["spec"])
    assert created["spec"] == local.model_dump(mode="json", by_alias=True, exclude_none=True)


@pytest.mark.parametrize("case", INVALID_CASES, ids=[c.name for c in INVALID_CASES])
def test_invalid_spec_is_refused_with_the_expected_message(
    custom: client.CustomObjectsApi, namespace: str, case: InvalidCase
) -> None:
    with pytest.raises(ApiException) as refused:
        _create(custom, namespace, _body(case.spec()))
    # 422 for schema and rule violations; 400 for unknown fields under strict field validation.
    assert refused.value.status in (400, 422), refused.value.body
    status = json.loads(refused.value.body)
    causes = status.get("details", {}).get("causes", [])
    matching = [
        cause
        for cause in causes
        if cause.get("field", "").startswith(case.path) and case.message in cause.get("message", "")
    ]
    # Strict field validation reports unknown fields in the message only.
    in_message = case.path.removeprefix("spec.") in status["message"] and case.message in status["message"]
    assert matching or in_message, f"expected {case.path}: {case.message}\ngot: {status['message']}"


SKIPPED_RULES = "some validation rules were not checked"
UNSUPPORTED = [case for case in INVALID_CASES if case.message.startswith("Unsupported value")]


@pytest.mark.parametrize("case", UNSUPPORTED, ids=[c.name for c in UNSUPPORTED])
def test_an_unknown_value_is_refused_in_one_line(
    custom: client.CustomObjectsApi, namespace: str, case: InvalidCase
) -> None:
    """An enumeration is a CEL rule, not a schema enum: the API server refuses an unknown value
    without the line that says it skipped every other rule ("<nil>: Invalid value: null: ...")."""
    with pytest.raises(ApiException) as refused:
        _create(custom, namespace, _body(case.spec()))
    status = json.loads(refused.value.body)
    causes = status.get("details", {}).get("causes", [])
    assert len(causes) == 1, status["message"]
    assert causes[0]["field"] == case.path
    assert case.message in causes[0]["message"]
    assert SKIPPED_RULES not in status["message"]


def _refusal(call: Callable[[], object]) -> list[str] | None:
    """The messages the API server refused `call` with as invalid, or None when it accepted it."""
    try:
        call()
    except ApiException as error:
        status = json.loads(error.body)
        if error.status not in (400, 422):
            raise AssertionError(f"refused for another reason than validity: {error.body}") from None
        causes = status.get("details", {}).get("causes", [])
        return [f"{cause.get('field')}: {cause.get('message')}" for cause in causes] or [status["message"]]
    return None


PROBES = resource_probes(160)
RESTRICTED = {  # what the test namespaces' Pod Security admission asks of a container
    "securityContext": {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": 1000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
}


def test_what_kubernetes_refuses_for_a_container_a_search_refuses_in_both_places(
    api_client: client.ApiClient, custom: client.CustomObjectsApi, namespace: str
) -> None:
    """Resource maps drawn from names and quantities a cluster accepts and refuses: every one that
    the API server refuses for a bare Pod's container is refused as a search's resources, and the
    API server and `validate` agree on every one, in the same words."""
    core = client.CoreV1Api(api_client)
    agreed = {"pod and search refused": 0, "search refused only": 0, "both accepted": 0}
    for index, resources in enumerate(PROBES):
        # As the operator writes them into a worker Job (quantities as strings).
        as_strings = {kind: {k: str(v) for k, v in values.items()} for kind, values in resources.items()}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"probe-{index}"},
            "spec": {"containers": [{"name": "c", "image": "x", "resources": as_strings, **RESTRICTED}]},
        }
        pod_refused = _refusal(functools.partial(core.create_namespaced_pod, namespace, pod, dry_run="All"))
        spec = copy.deepcopy(BASE_SPEC) | {"execution": {"resources": resources}}
        server = _refusal(
            functools.partial(
                custom.create_namespaced_custom_object,
                *(GROUP, VERSION, namespace, PLURAL, _body(spec)),
                dry_run="All",
                field_validation="Strict",
            )
        )
        try:
            validate_spec(spec)
            local = None
        except ManifestError as error:
            local = [str(e) for e in error.errors]
        where = f"probe {index}: {resources}\npod: {pod_refused}\nserver: {server}\nlocal: {local}"
        assert (server is None) == (local is None), where
        assert pod_refused is None or local is not None, where
        for line in local or []:
            message = line.split(": ", 1)[1]
            assert any(message in refusal for refusal in server or []), where
        key = (
            "both accepted"
            if local is None
            else "pod and search refused"
            if pod_refused
            else "search refused only"
        )
        agreed[key] += 1
    assert all(agreed.values()), agreed  # the draw covers each outcome


@pytest.mark.parametrize("name", VALID_FAMILY_CASES)
def test_what_a_model_family_can_use_is_accepted(
    custom: client.CustomObjectsApi, namespace: str, name: str
) -> None:
    spec = valid_family_spec(name)
    created = _create(custom, namespace, _body(spec))
    local = SustainSearchSpec.model_validate(spec)
    assert created["spec"] == local.model_dump(mode="json", by_alias=True, exclude_none=True)


@pytest.mark.parametrize(
    "scoring",
    [
        {"crossCheck": {"family": "Clip"}},
        {"detector": "Clip", "clipModel": {"id": "/models/clip"}, "crossCheck": {"family": "Vqa"}},
        {"detector": "Clip"},
    ],
)
def test_a_detector_and_its_cross_check_are_accepted_and_defaulted_as_locally(
    custom: client.CustomObjectsApi, namespace: str, scoring: dict[str, Any]
) -> None:
    spec = {**BASE_SPEC, "scoring": scoring}
    created = _create(custom, namespace, _body(spec))
    local = SustainSearchSpec.model_validate(spec)
    assert created["spec"] == local.model_dump(mode="json", by_alias=True, exclude_none=True)


def test_server_defaults_equal_pydantic_defaults(custom: client.CustomObjectsApi, namespace: str) -> None:
    created = _create(custom, namespace, _body(BASE_SPEC))
    expected = SustainSearchSpec.model_validate(BASE_SPEC).model_dump(
        mode="json", by_alias=True, exclude_none=True
    )
    assert created["spec"] == expected


def test_a_pod_affinity_is_stored_whole(custom: client.CustomObjectsApi, namespace: str) -> None:
    """Free-form pod fields keep every nested field (a schema that pruned them lost the user's
    affinity silently)."""
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "gpu", "operator": "In", "values": ["h100", "h200"]}]}
                ]
            }
        },
        "podAntiAffinity": {
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 10, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname"}}
            ]
        },
    }
    created = _create(custom, namespace, _body(BASE_SPEC | {"execution": {"affinity": affinity}}))
    assert created["spec"]["execution"]["affinity"] == affinity


def test_kubectl_explain_shows_field_descriptions(control_plane: ControlPlane, crd_installed: None) -> None:
    def explained() -> str | None:
        result = control_plane.kubectl(
            "explain", "sustainsearches.spec.algorithm.populationSize", check=False
        )
        return result.stdout if result.returncode == 0 else None

    wait_until(explained, timeout=60, what="kubectl explain to know SustainSearch")
    text = explained() or ""
    assert "Candidates per generation" in text
    spec_text = control_plane.kubectl("explain", "sds.spec").stdout
    for field in ("searchSpace", "objectives", "execution", "algorithm", "scoring", "prompts", "model"):
        assert field in spec_text


def test_printer_columns_render(
    control_plane: ControlPlane, custom: client.CustomObjectsApi, namespace: str
) -> None:
    name = "columns"
    _create(custom, namespace, _body(BASE_SPEC, name=name))
    status = SustainSearchStatus(
        phase=Phase.RUNNING,
        generation=3,
        generation_progress="3/10",
        evaluations=EvaluationCounters(total=64, succeeded=60, failed=1, running=3),
        front_size=7,
        energy=EnergyTotals(total_joules=1234.5, gpu_joules=1000.0, cpu_joules=234.5),
    )
    custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        {"status": status.model_dump(mode="json", by_alias=True, exclude_none=True)},
    )
    table = control_plane.kubectl("get", "sds", name, "-n", namespace).stdout.splitlines()
    header = ["NAME", "PHASE", "GENERATION", "EVALUATIONS", "FRONT", "QUEUE", "QUEUED", "ENERGY-J", "AGE"]
    assert table[0].split() == header
    row = table[1].split()
    assert row[:6] == [name, "Running", "3/10", "60", "7", "1234.5"]  # no queue: both cells empty


def test_immutable_fields_cannot_change_but_budgets_can(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    name = "immutable"
    _create(custom, namespace, _body(BASE_SPEC, name=name))

    def patch(spec: dict[str, Any]) -> None:
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, {"spec": spec})

    patch({"algorithm": {"generations": 25}, "execution": {"parallelism": 4}})
    current = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    assert current["spec"]["algorithm"]["generations"] == 25
    assert current["spec"]["execution"]["parallelism"] == 4

    for change, message in (
        ({"model": {"id": "other/model"}}, "model is immutable"),
        ({"algorithm": {"seed": 7}}, "algorithm.seed is immutable"),
        ({"searchSpace": {"inferenceSteps": {"min": 30, "max": 40}}}, "searchSpace is immutable"),
        ({"objectives": [{"name": "Energy"}]}, "objectives is immutable"),
    ):
        with pytest.raises(ApiException) as refused:
            patch(change)
        assert refused.value.status == 422
        assert message in refused.value.body


def test_screening_and_evidence_cannot_change_while_a_search_runs(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    spec = copy.deepcopy(BASE_SPEC) | {
        "algorithm": {
            "screening": {"imagesPerPrompt": 4},
            "evidence": {"imagesPerPrompt": 4, "maxImagesPerPrompt": 40},
        }
    }
    _create(custom, namespace, _body(spec, name="screened"))
    for change, message in (
        ({"screening": {"imagesPerPrompt": 5}}, "algorithm.screening is immutable"),
        ({"evidence": {"imagesPerPrompt": 4, "maxImagesPerPrompt": 60}}, "algorithm.evidence is immutable"),
    ):
        with pytest.raises(ApiException) as refused:
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, "screened", {"spec": {"algorithm": change}}
            )
        assert refused.value.status == 422
        assert message in refused.value.body


def test_the_paper_study_expands_into_searches_the_api_server_accepts(
    custom: client.CustomObjectsApi, namespace: str
) -> None:
    manifests = expand(load_arms(EXAMPLES_DIR / "paper"), study="paper", runs=2)
    assert len(manifests) == 2 * len(list((EXAMPLES_DIR / "paper").glob("*.yaml")))
    for manifest in manifests:
        created = custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, manifest, field_validation="Strict", dry_run="All"
        )
        assert created["metadata"]["labels"]["sustaindiffusion.io/study"] == "paper"
        assert created["spec"]["algorithm"]["seed"] == int(
            created["metadata"]["labels"]["sustaindiffusion.io/run"]
        )
