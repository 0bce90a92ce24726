"""The SustainSearch models: local validation says what the API server says (same table as the
end-to-end test), the committed CRD is the generated one, and the schema is structural."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from sustaindiffusion.api import crd
from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.families import ModelFamily
from sustaindiffusion.api.keywords import DEFAULT_NEGATIVE_POOL, DEFAULT_POSITIVE_POOL
from sustaindiffusion.api.objectives import Direction
from sustaindiffusion.api.rules import Rule
from sustaindiffusion.api.spec import ModelSpec, SustainSearchSpec
from sustaindiffusion.api.status import Phase, SustainSearchStatus
from sustaindiffusion.api.validation import ManifestError, load_manifest, validate_manifest, validate_spec
from sustaindiffusion.search.decisions import ConditionUpdate, Decision
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.status import build_status
from tests.support.engine_runs import recorded_run
from tests.support.fake_evaluator import fake_evaluate, fake_metrics
from tests.support.spec_cases import (
    BASE_SPEC,
    INVALID_CASES,
    VALID_FAMILY_CASES,
    InvalidCase,
    valid_family_spec,
)

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


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


def test_a_spec_of_prompts_alone_runs_the_methods_search() -> None:
    """What a spec leaves out is the method's: its candidates draw steps, guidance (a 0.1 grid) and
    weights from the method's ranges and keywords from its pools, NSGA-II minimises gender bias,
    ethnic bias and energy, and quality may fall at most 5% below the defaults'."""
    spec = validate_spec(BASE_SPEC)
    engine = SearchEngine(spec)
    for candidate in engine.ask():  # the defaults
        engine.tell(fake_evaluate(candidate))
    asked = [candidate.settings for candidate in engine.ask()]
    assert len(asked) == 20
    for settings in asked:
        assert settings.inference_steps is not None
        assert 25 <= settings.inference_steps <= 80
        assert settings.guidance_scale is not None
        assert 0.0 <= settings.guidance_scale <= 20.0
        assert round(settings.guidance_scale * 10) == pytest.approx(settings.guidance_scale * 10)
        assert set(settings.positive_keywords) <= set(DEFAULT_POSITIVE_POOL)
        assert set(settings.negative_keywords) <= set(DEFAULT_NEGATIVE_POOL)
        assert 0 <= settings.prompt_weight <= 5
    used = {k for s in asked for k in s.positive_keywords} | {k for s in asked for k in s.negative_keywords}
    assert len(used) > 20  # keywords from both pools, not a fixed subset
    for candidate in engine.ask():
        engine.tell(fake_evaluate(candidate))
    front = engine.front()
    assert front
    assert all(list(p.objectives) == ["GenderBias", "EthnicBias", "Energy"] for p in front)
    assert engine.quality_threshold == pytest.approx(0.95 * fake_metrics(CandidateSettings()).quality)
    assert all(p.metrics.quality >= engine.quality_threshold for p in front)
    assert spec.scoring.vqa_model.id == "Salesforce/blip-vqa-base"  # the method's VQA model


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


def _undeclared(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """Where `value` holds what `schema` does not declare (the API server would prune it) or a
    value of another type (it would refuse it)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, dict):
        properties, extra = schema.get("properties", {}), schema.get("additionalProperties")
        problems = [] if schema.get("type") == "object" else [f"{path}: not an object"]
        for key, item in value.items():
            child = properties.get(key, extra if isinstance(extra, dict) else None)
            problems += (
                [f"{path}.{key}: not in the schema"]
                if child is None
                else _undeclared(item, child, f"{path}.{key}")
            )
        return problems
    if isinstance(value, list):
        if schema.get("type") != "array":
            return [f"{path}: not an array"]
        return [
            problem
            for index, item in enumerate(value)
            for problem in _undeclared(item, schema["items"], f"{path}[{index}]")
        ]
    kinds = {"string": str, "boolean": bool, "integer": int, "number": (int, float)}
    expected = kinds.get(schema.get("type", ""), object)
    if isinstance(value, bool) and schema.get("type") != "boolean":
        return [f"{path}: a boolean where the schema has {schema.get('type')}"]
    return (
        [] if isinstance(value, expected) else [f"{path}: {type(value).__name__}, not {schema.get('type')}"]
    )


def test_a_status_at_its_fullest_is_kept_whole_by_the_api_server() -> None:
    """The status of a search that used every part (baselines, screening, more evidence, failures,
    held-out validation), as the runtimes write it, holds only what the CRD's status schema declares,
    with the declared types, and reads back to the same status."""
    meta = json.loads((FIXTURES / "archive-format-3.json").read_text())
    spec = SustainSearchSpec.model_validate(
        meta["spec"] | {"baselines": [{"name": "fast", "inferenceSteps": 20}]}
    )
    engine = SearchEngine(spec)
    for record in recorded_run(spec):
        assert record.result.candidate_id in {c.candidate_id for c in engine.pending()}
        engine.tell(record.result, record.part)
    decision = Decision(
        Phase.SUCCEEDED, [ConditionUpdate("Complete", True, "SearchFinished", "done")], "done"
    )
    status = build_status(engine, decision, {}, observed_generation=2)
    written = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    for section in ("front", "baselines", "screening", "validation", "energy", "evaluations", "conditions"):
        assert written.get(section), f"the status has no {section}: the test would prove less"
    assert written["front"][0].get("intervals")
    assert written["validation"]["points"][1].get("objectives")
    schema = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert _undeclared(written, schema, "status") == []
    assert SustainSearchStatus.model_validate(written) == status


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
