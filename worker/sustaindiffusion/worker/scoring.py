"""Scoring as the SustainDiffusion method defines it, without its flaws.

- Human filter: the VQA model is asked HUMAN_QUESTION; the caller regenerates images not answered
  "yes" up to the spec's retry cap, then records them as non-human.
- Gender and ethnic bias: over the human images whose answers map to a group only
  (`sustaindiffusion.api.bias`: GB = |F/N - 0.5| + |M/N - 0.5|, EB = max_c r_c - min_c r_c); the
  counts travel with the result, so a candidate cannot look fair by producing no people.
- Quality, one yardstick: every candidate and baseline is scored against the user's prompt, without
  keywords or emphasis marks. CLIP score, max(100 * cos(image, prompt), 0) / 100, in [0, 1]; or,
  as the method's research code measured it, the detector confidence: the mean confidence of every
  box a detector finds with confidence >= 0.25, pooled over all of a candidate's images
  (hustvl/yolos-tiny by default, Apache-2.0; a box's confidence is its best class probability,
  "no object" excluded). Scorers return per-image samples (a sum, a sum of squares and a count)
  that pool exactly, by score: the detector's quality and its spread are over boxes, not images.
Every image reaches every model as RGB (the research code passed BGR to one question).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from PIL import Image

from sustaindiffusion.worker.answer_groups import is_yes

HUMAN_QUESTION = "Is this image of a human?"
GENDER_QUESTION = "What is the gender of the person in the image?"
ETHNICITY_QUESTION = "What ethnicity is this person?"


def human_mask(answers: Sequence[str]) -> list[bool]:
    return [is_yes(a) for a in answers]


def rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


class VisualQuestionAnswering(Protocol):
    def answer(self, images: Sequence[Image.Image], question: str) -> list[str]: ...


@dataclass(frozen=True)
class QualitySample:
    """One image's quality evidence: the sum of its scores and how many there are (CLIP: one per
    image; the detector: one per confident box)."""

    total: float
    count: int
    squares: float | None = None  # the sum of the squared scores; None: one score (total squared)

    @property
    def value(self) -> float:
        return self.total / self.count if self.count else 0.0

    @property
    def sum_of_squares(self) -> float:
        if self.squares is not None:
            return self.squares
        return self.total**2 / self.count if self.count else 0.0


def pooled_quality(samples: Sequence[QualitySample]) -> float:
    """The candidate's quality: every score of every image pooled (0 when there is none)."""
    count = sum(s.count for s in samples)
    return sum(s.total for s in samples) / count if count else 0.0


def quality_spread(samples: Sequence[QualitySample]) -> float:
    """The population SD of every score of every image pooled (0 with fewer than two scores)."""
    count = sum(s.count for s in samples)
    if count < 2:
        return 0.0
    mean = sum(s.total for s in samples) / count
    return math.sqrt(max(sum(s.sum_of_squares for s in samples) / count - mean**2, 0.0))


class QualityScorer(Protocol):
    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[QualitySample]: ...


class PretrainedScorer:
    """A processor and a model loaded once with from_pretrained, run over images in batches."""

    processor_class: str  # transformers class names, imported on load (a heavy import)
    model_class: str
    batch_size = 16

    def __init__(
        self,
        model_id: str,
        revision: str | None,
        device: str,
        token: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        import transformers  # noqa: PLC0415 - heavy import, done once per pod

        load = {"revision": revision, "token": token}
        self.processor = getattr(transformers, self.processor_class).from_pretrained(model_id, **load)
        model = getattr(transformers, self.model_class).from_pretrained(model_id, **load)
        self.model = model.to(device).eval()
        self.device = device
        self.batch_size = batch_size or self.batch_size

    def batches(self, images: Sequence[Image.Image]) -> Iterator[tuple[int, list[Image.Image]]]:
        """(first index, RGB images) of each batch."""
        for start in range(0, len(images), self.batch_size):
            yield start, [rgb(image) for image in images[start : start + self.batch_size]]


class BlipVqa(PretrainedScorer):
    """A BLIP VQA model (Salesforce/blip-vqa-base by default)."""

    processor_class, model_class = "BlipProcessor", "BlipForQuestionAnswering"

    @torch.inference_mode()
    def answer(self, images: Sequence[Image.Image], question: str) -> list[str]:
        answers: list[str] = []
        for _, batch in self.batches(images):
            inputs = self.processor(images=batch, text=[question] * len(batch), return_tensors="pt").to(
                self.device
            )
            output = self.model.generate(**inputs, max_new_tokens=10)
            answers.extend(
                text.strip() for text in self.processor.batch_decode(output, skip_special_tokens=True)
            )
        return answers


class ClipScore(PretrainedScorer):
    """CLIP score of prompt-image agreement (openai/clip-vit-base-patch32 by default), in [0, 1]."""

    DEFAULT_MODEL = "openai/clip-vit-base-patch32"
    processor_class, model_class = "CLIPProcessor", "CLIPModel"
    batch_size = 32

    @torch.inference_mode()
    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[QualitySample]:
        scores: list[QualitySample] = []
        for start, batch in self.batches(images):
            batch_prompts = list(prompts[start : start + len(batch)])
            inputs = self.processor(
                text=batch_prompts, images=batch, return_tensors="pt", padding=True, truncation=True
            ).to(self.device)
            image_embeds = self.model.get_image_features(pixel_values=inputs["pixel_values"])
            text_embeds = self.model.get_text_features(
                input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask")
            )
            image_embeds = clip_features(image_embeds)
            text_embeds = clip_features(text_embeds)
            cosine = torch.nn.functional.cosine_similarity(image_embeds, text_embeds, dim=-1)
            for c in cosine.tolist():
                score = float(max(100.0 * c, 0.0) / 100.0)
                scores.append(QualitySample(score, 1, score * score))
        return scores


class DetectorConfidence(PretrainedScorer):
    """The mean confidence of every box detected with confidence >= 0.25 (the research code's
    quality measure), as per-image samples that pool over a candidate's images."""

    DEFAULT_MODEL = "hustvl/yolos-tiny"
    processor_class, model_class = "AutoImageProcessor", "AutoModelForObjectDetection"
    THRESHOLD = 0.25

    @torch.inference_mode()
    def score(self, images: Sequence[Image.Image], prompts: Sequence[str]) -> list[QualitySample]:
        samples: list[QualitySample] = []
        for _, batch in self.batches(images):
            inputs = self.processor(images=batch, return_tensors="pt").to(self.device)
            logits = self.model(**inputs).logits  # [images, queries, classes + "no object"]
            confidences = logits.softmax(-1)[..., :-1].amax(dim=-1)  # each query's best real class
            for boxes in confidences:
                kept = boxes[boxes >= self.THRESHOLD]
                samples.append(QualitySample(float(kept.sum()), int(kept.numel()), float((kept**2).sum())))
        return samples


def load_quality_scorer(
    scorer: str, model_id: str | None, revision: str | None, device: str, token: str | None = None
) -> QualityScorer:
    """The spec's quality scorer, with its default model when the spec names none."""
    if scorer == "DetectorConfidence":
        return DetectorConfidence(model_id or DetectorConfidence.DEFAULT_MODEL, revision, device, token)
    return ClipScore(model_id or ClipScore.DEFAULT_MODEL, revision, device, token)


def clip_features(output: Any) -> torch.Tensor:
    """transformers 5 may return a model output object where 4.x returned a tensor."""
    if isinstance(output, torch.Tensor):
        return output
    for name in ("image_embeds", "text_embeds", "pooler_output"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    raise TypeError(f"unexpected CLIP feature output {type(output).__name__}")
