"""The SustainSearch models: local validation says what the API server says (same table as the
end-to-end test), the committed CRD is the generated one, and the schema is structural."""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from sustaindiffusion.api import crd
from sustaindiffusion.api.families import ModelFamily
from sustaindiffusion.api.keywords import DEFAULT_NEGATIVE_POOL, DEFAULT_POSITIVE_POOL
from sustaindiffusion.api.objectives import Direction, ObjectiveName
from sustaindiffusion.api.rules import Rule
from sustaindiffusion.api.spec import ModelSpec, SustainSearchSpec
from sustaindiffusion.api.status import SustainSearchStatus
from sustaindiffusion.api.validation import ManifestError, load_manifest, validate_manifest, validate_spec
from tests.support.spec_cases import (
    BASE_SPEC,
    INVALID_CASES,
    VALID_FAMILY_CASES,
    InvalidCase,
    valid_family_spec,
)

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("case", INVALID_CASES, ids=[c.name for c in INVALID_CASES])
def test_local_validation_names_the_field_and_rule(case: InvalidCase) -> None:
    with pytest.raises(ManifestError) as refused:
        validate_spec(case.spec())
    assert any(
        error.path.startswith(case.path) and case.message in error.message for error in refused.value.errors
    ), f"expected {case.path}: {case.message}\ngot: {refused.value}"


def _declared_rules(model: type[BaseModel], seen: set[type[BaseModel]]) -> list[Rule]:
    """Every Rule of `model` and of the models its fields hold, transition rules left out."""
    if model in seen:
        return []
    seen.add(model)
    rules = [rule for rule in getattr(model, "rules", ()) if rule.check is not None]
    for info in model.model_fields.values():
        for argument in typing.get_args(info.annotation) or (info.annotation,):
            for inner in typing.get_args(argument) or (argument,):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    rules += _declared_rules(inner, seen)
    return rules


def test_every_cross_field_rule_has_an_invalid_case() -> None:
    """A rule added to the models without a case here would go untested on the API server."""
    messages = {case.message for case in INVALID_CASES}
    untested = [
        rule.message
        for rule in _declared_rules(SustainSearchSpec, set())
        if not any(rule.message in message or message in rule.message for message in messages)
    ]
    assert not untested, f"rules without an invalid case in tests/support/spec_cases.py: {untested}"


def test_defaults_follow_the_method() -> None:
    spec = validate_spec(BASE_SPEC)
    assert spec.search_space.positive_keywords.pool == list(DEFAULT_POSITIVE_POOL)
    assert spec.search_space.negative_keywords.pool == list(DEFAULT_NEGATIVE_POOL)
    assert len(DEFAULT_POSITIVE_POOL) == 20
    assert len(DEFAULT_NEGATIVE_POOL) == 25
    assert (spec.search_space.inference_steps.min, spec.search_space.inference_steps.max) == (25, 80)
    assert (spec.search_space.guidance_scale.min, spec.search_space.guidance_scale.max) == (0.0, 20.0)
    assert spec.search_space.guidance_scale.step == 0.1
    assert (spec.search_space.prompt_weight.min, spec.search_space.prompt_weight.max) == (0, 5)
    assert spec.objective_names() == [
        ObjectiveName.GENDER_BIAS,
        ObjectiveName.ETHNIC_BIAS,
        ObjectiveName.ENERGY,
    ]
    assert spec.constraints.quality.enabled
    assert spec.scoring.vqa_model.id == "Salesforce/blip-vqa-base"


def test_objective_directions_default_to_their_natural_sense() -> None:
    spec = validate_spec(BASE_SPEC | {"objectives": [{"name": "Quality"}, {"name": "Energy"}]})
    assert [o.effective_direction for o in spec.objectives] == [Direction.MAXIMIZE, Direction.MINIMIZE]


def test_fixed_variables_are_not_searched() -> None:
    spec = validate_spec(
        BASE_SPEC | {"searchSpace": {"inferenceSteps": {"fixed": 28}, "positiveKeywords": {"fixed": []}}}
    )
    assert not spec.search_space.inference_steps.searched
    assert not spec.search_space.positive_keywords.searched
    assert spec.search_space.negative_keywords.searched


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_examples_validate_locally(example: Path) -> None:
    manifest = load_manifest(example)
    assert manifest.name == example.stem


def test_manifest_envelope_errors_are_specific() -> None:
    with pytest.raises(ManifestError) as refused:
        validate_manifest(
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "Bad Name"}, "spec": BASE_SPEC}
        )
    text = str(refused.value)
    assert "apiVersion: must be sustaindiffusion.io/v1alpha1" in text
    assert "kind: must be SustainSearch" in text
    assert "metadata.name: must be a lowercase RFC 1123 subdomain" in text


def test_unreadable_and_malformed_files_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read"):
        load_manifest(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed")
    with pytest.raises(ManifestError, match="invalid YAML"):
        load_manifest(broken)


def test_committed_crds_are_the_generated_one() -> None:
    assert crd.CRD_PATH.read_text() == crd.render_crd(), "crds/sustainsearch.yaml is stale: run `make crds`"
    assert crd.CHART_CRD_PATH.read_text() == crd.render_crd(), "the chart's CRD is stale: run `make crds`"


def _walk(schema: dict[str, Any], path: str) -> list[tuple[str, dict[str, Any]]]:
    nodes = [(path, schema)]
    for name, child in schema.get("properties", {}).items():
        nodes.extend(_walk(child, f"{path}.{name}"))
    if isinstance(schema.get("items"), dict):
        nodes.extend(_walk(schema["items"], f"{path}[]"))
    if isinstance(schema.get("additionalProperties"), dict):
        nodes.extend(_walk(schema["additionalProperties"], f"{path}{{}}"))
    return nodes


def test_generated_schema_is_structural_and_described() -> None:
    version = crd.build_crd()["spec"]["versions"][0]
    root = version["schema"]["openAPIV3Schema"]
    for path, node in _walk(root["properties"]["spec"], "spec") + _walk(
        root["properties"]["status"], "status"
    ):
        assert "$ref" not in node, path
        assert "title" not in node, path
        int_or_string = node.get("x-kubernetes-int-or-string", False)
        assert "anyOf" not in node or int_or_string, path
        assert "type" in node or int_or_string or node.get("x-kubernetes-preserve-unknown-fields"), path
        assert node.get("additionalProperties") is not False, path
        assert "uniqueItems" not in node, path
        if not path.endswith(("[]", "}")):
            assert node.get("description"), f"{path} has no description for kubectl explain"
        if node.get("type") == "array":
            assert "maxItems" in node, f"{path}: CEL cost needs maxItems"


def test_rules_are_emitted_as_cel() -> None:
    text = crd.render_crd()
    for rule_message in (
        "min must not exceed max",
        "give prompts inline or by configMapRef",
        "each objective may appear only once",
        "model is immutable",
    ):
        assert rule_message in text


def test_status_round_trips_through_its_schema_names() -> None:
    status = SustainSearchStatus.model_validate(
        {"phase": "Running", "generationProgress": "1/3", "frontSize": 2, "energy": {"totalJoules": 5.0}}
    )
    dumped = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert dumped["generationProgress"] == "1/3"
    assert dumped["energy"]["totalJoules"] == 5.0
    assert SustainSearchStatus.model_validate(dumped) == status


@pytest.mark.parametrize("name", VALID_FAMILY_CASES)
def test_what_a_model_family_can_use_is_accepted(name: str) -> None:
    validate_spec(valid_family_spec(name))


@pytest.mark.parametrize(
    ("model", "families"),
    [
        ({}, ["StableDiffusion3"]),  # the default model id is SD3 medium
        ({"family": "Flux1Dev", "id": "stabilityai/stable-diffusion-3.5-large"}, ["Flux1Dev"]),  # named wins
        ({"id": "black-forest-labs/FLUX.1-schnell"}, ["Flux1Schnell"]),
        ({"id": "/models/x", "pipelineClass": "FluxPipeline"}, ["Flux1Dev", "Flux1Schnell"]),
        (
            {"id": "/models/x", "pipelineClass": "StableDiffusion3Pipeline"},
            ["StableDiffusion3", "StableDiffusion35"],
        ),
        ({"id": "/models/x"}, [family.value for family in ModelFamily if family is not ModelFamily.AUTO]),
    ],
)
def test_the_family_is_resolved_from_what_the_spec_says(model: dict[str, str], families: list[str]) -> None:
    spec = ModelSpec.model_validate(model)
    assert [facts.family.value for facts in spec.possible_families()] == families
