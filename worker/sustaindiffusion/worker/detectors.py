"""The detector families of `spec.scoring`: the one whose answers drive the human filter and count
for the biases (`detector`), and the one that checks it (`crossCheck`). Both answer the person,
gender and ethnicity questions (`scoring.VisualQuestionAnswering`) with words of the answer groups."""

from __future__ import annotations

from pathlib import Path

from sustaindiffusion.api.spec import DetectorFamily, ScoringSpec
from sustaindiffusion.worker.clip_detector import ClipZeroShot
from sustaindiffusion.worker.generation import resolve_model_path
from sustaindiffusion.worker.scoring import BlipVqa, VisualQuestionAnswering


def load_detector(
    scoring: ScoringSpec,
    family: DetectorFamily,
    device: str,
    base: Path | None = None,
    token: str | None = None,
) -> VisualQuestionAnswering:
    """The family's model as `scoring` names it (local paths resolved against `base`)."""
    model = scoring.family_model(family)
    path = resolve_model_path(model.id, base)
    if family is DetectorFamily.CLIP:
        return ClipZeroShot(path, model.revision, device, token)
    return BlipVqa(path, model.revision, device, token)


def load_detectors(
    scoring: ScoringSpec, device: str, base: Path | None = None, token: str | None = None
) -> tuple[VisualQuestionAnswering, VisualQuestionAnswering | None]:
    """The detector and the cross-check (None without one)."""
    detector = load_detector(scoring, scoring.detector_family, device, base, token)
    check = scoring.cross_check
    return detector, (load_detector(scoring, check.family, device, base, token) if check else None)
