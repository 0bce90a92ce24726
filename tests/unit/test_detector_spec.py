"""The detector family and its cross-check in the spec: defaults that keep today's detector, what
is refused and where, and the same rule in the CRD for the API server."""

from __future__ import annotations

import pytest

from sustaindiffusion.api.crd import build_crd
from sustaindiffusion.api.rules import STORED
from sustaindiffusion.api.spec import DEFAULT_CLIP_DETECTOR, DetectorFamily, ScoringSpec, SustainSearchSpec
from sustaindiffusion.api.task import EvaluationTask
from sustaindiffusion.api.validation import ManifestError, validate_spec
from tests.support.engine_runs import PROMPTS

# ----------------------------------------------------------------------------- the spec


def test_a_spec_without_the_fields_keeps_todays_detector_and_no_cross_check() -> None:
    scoring = validate_spec({"prompts": PROMPTS}).scoring
    assert scoring.detector is None
    assert scoring.detector_family is DetectorFamily.VQA
    assert scoring.family_model(DetectorFamily.VQA).id == "Salesforce/blip-vqa-base"
    assert scoring.cross_check is None
    # Nothing new is written out for it: a run directory's stored spec compares equal on resume.
    dumped = scoring.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert set(dumped) == {"vqaModel", "quality", "humanFilter"}


def test_a_stored_scoring_of_before_reads_and_a_task_of_before_reads() -> None:
    stored = {"vqaModel": {"id": "Salesforce/blip-vqa-base"}, "humanFilter": {"maxRetries": 2}}
    spec = SustainSearchSpec.model_validate({"prompts": PROMPTS, "scoring": stored}, context=STORED)
    assert spec.scoring.detector_family is DetectorFamily.VQA
    task = EvaluationTask.model_validate(
        {
            "search": "s",
            "generation": 0,
            "model": {},
            "prompts": ["p"],
            "imagesPerPrompt": 1,
            "scoring": stored,
            "candidates": [{"candidateId": "0123456789abcdef", "settings": {}}],
            "candidatesPerShard": 1,
        }
    )
    assert task.scoring.cross_check is None


def test_the_clip_family_as_detector_and_the_vqa_family_as_its_check() -> None:
    scoring = validate_spec(
        {
            "prompts": PROMPTS,
            "scoring": {
                "detector": "Clip",
                "clipModel": {"id": "/models/clip", "revision": "main"},
                "crossCheck": {"family": "Vqa"},
            },
        }
    ).scoring
    assert scoring.detector_family is DetectorFamily.CLIP
    assert scoring.family_model(DetectorFamily.CLIP).id == "/models/clip"
    assert scoring.cross_check is not None
    assert scoring.cross_check.max_disagreement == 0.2
    assert scoring.family_model(scoring.cross_check.family).id == "Salesforce/blip-vqa-base"
    assert ScoringSpec(detector=DetectorFamily.CLIP).family_model(DetectorFamily.CLIP).id == (
        DEFAULT_CLIP_DETECTOR
    )


@pytest.mark.parametrize(
    ("scoring", "path", "message"),
    [
        (
            {"crossCheck": {"family": "Vqa"}},  # the detector is Vqa when absent
            "spec.scoring.crossCheck.family",
            "crossCheck.family must differ from the detector's family",
        ),
        (
            {"detector": "Clip", "crossCheck": {"family": "Clip"}},
            "spec.scoring.crossCheck.family",
            "a family cannot check itself",
        ),
        ({"detector": "Owl"}, "spec.scoring.detector", 'Unsupported value: "Owl"'),
        ({"crossCheck": {"family": "Clip", "maxDisagreement": 1.5}}, "spec.scoring.crossCheck", "less than"),
        ({"crossCheck": {"maxDisagreement": 0.1}}, "spec.scoring.crossCheck.family", "Required value"),
    ],
)
def test_bad_detector_settings_are_refused_with_the_field_at_fault(
    scoring: dict[str, object], path: str, message: str
) -> None:
    with pytest.raises(ManifestError) as refused:
        validate_spec({"prompts": PROMPTS, "scoring": scoring})
    assert any(e.path.startswith(path) and message in e.message for e in refused.value.errors), str(
        refused.value
    )


def test_the_crd_holds_the_same_rule_for_the_api_server() -> None:
    spec = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    scoring = spec["properties"]["scoring"]
    rules = {v["rule"]: v for v in scoring["x-kubernetes-validations"]}
    rule = "!has(self.crossCheck) || self.crossCheck.family != (has(self.detector) ? self.detector : 'Vqa')"
    assert rules[rule]["fieldPath"] == ".crossCheck.family"
    assert "a family cannot check itself" in rules[rule]["message"]
    assert "default" not in scoring["properties"]["detector"]  # stored searches stay as written
    family = scoring["properties"]["crossCheck"]["properties"]["family"]
    assert family["x-kubernetes-validations"][0]["rule"] == 'self in ["Vqa", "Clip"]'
