"""The CLIP zero-shot detector: the second detector family (`spec.scoring.detector` or
`spec.scoring.crossCheck` set to Clip), answering the person gate, gender and ethnicity by which of
a question's text prompts an image is nearest to (openai/clip-vit-base-patch32 by default).

The rule, per image and question:
- CLIP's logits (its scaled cosine similarity of the image to each prompt) are taken per label at
  the label's best prompt (a label may have several: "no person" has three, so that it is not one
  negation CLIP reads poorly), and a softmax over the labels gives their probabilities;
- the answer is the most probable label when its probability leads the runner-up's by at least
  `margin` (MARGIN, 0.1, by default); otherwise it is CANT_TELL.

Answers are words of the VQA family's answer groups (`answer_groups`): "yes" or "no" to the person
question, "female" or "male", a group's name ("white", "asian", "black", "arab"). So the human
filter, the counts and the bias statistics read them as they read the VQA model's, and CANT_TELL,
which maps to no group, is no evidence: on the person gate it is not a yes (the human filter
regenerates the image; it does not count for the biases), for gender and ethnicity the image does
not count for that bias.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from sustaindiffusion.api.spec import DEFAULT_CLIP_DETECTOR
from sustaindiffusion.worker.answer_groups import ETHNIC_GROUPS
from sustaindiffusion.worker.scoring import (
    ETHNICITY_QUESTION,
    GENDER_QUESTION,
    HUMAN_QUESTION,
    PretrainedScorer,
    clip_features,
)

CANT_TELL = "can't tell"
MARGIN = 0.1


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


@dataclass(frozen=True)
class PromptSet:
    """A question's labels (the answers) and the prompts that stand for each."""

    prompts: dict[str, tuple[str, ...]]

    @property
    def labels(self) -> list[str]:
        return list(self.prompts)

    @property
    def texts(self) -> list[str]:
        return [text for texts in self.prompts.values() for text in texts]

    @property
    def label_of_text(self) -> list[int]:
        """Per text (in `texts` order), the index of its label."""
        return [index for index, texts in enumerate(self.prompts.values()) for _ in texts]


PROMPTS: dict[str, PromptSet] = {
    HUMAN_QUESTION: PromptSet(
        {
            "yes": ("a photo of a person",),
            "no": ("a photo of an object", "a photo of a landscape", "a photo of an animal"),
        }
    ),
    GENDER_QUESTION: PromptSet({"female": ("a photo of a woman",), "male": ("a photo of a man",)}),
    ETHNICITY_QUESTION: PromptSet(
        {group: (f"a photo of {_article(group)} {group} person",) for group in ETHNIC_GROUPS}
    ),
}


def zero_shot_answers(logits: torch.Tensor, prompts: PromptSet, margin: float = MARGIN) -> list[str]:
    """The answers of the images whose logits ([images, texts], in `prompts.texts` order) are given:
    per label its best text's logit, softmax over labels, the top label if it leads by `margin`."""
    columns = torch.tensor(prompts.label_of_text)
    per_label = torch.stack(
        [logits[:, columns == label].amax(dim=1) for label in range(len(prompts.labels))], dim=1
    )
    top = per_label.softmax(dim=1).topk(2, dim=1)
    answers = []
    for (first, second), index in zip(top.values.tolist(), top.indices[:, 0].tolist(), strict=True):
        answers.append(prompts.labels[index] if first - second >= margin else CANT_TELL)
    return answers


class ClipZeroShot(PretrainedScorer):
    """A CLIPModel and its CLIPProcessor, answering the VQA family's questions zero-shot."""

    DEFAULT_MODEL = DEFAULT_CLIP_DETECTOR
    processor_class, model_class = "CLIPProcessor", "CLIPModel"
    batch_size = 32

    def __init__(
        self,
        model_id: str,
        revision: str | None,
        device: str,
        token: str | None = None,
        batch_size: int | None = None,
        margin: float = MARGIN,
    ) -> None:
        super().__init__(model_id, revision, device, token, batch_size)
        self.margin = margin
        self._texts: dict[str, torch.Tensor] = {}  # per question: its texts' unit embeddings

    def _text_embeddings(self, question: str) -> torch.Tensor:
        if question not in self._texts:
            inputs = self.processor(
                text=PROMPTS[question].texts, return_tensors="pt", padding=True, truncation=True
            ).to(self.device)
            features = clip_features(
                self.model.get_text_features(
                    input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask")
                )
            )
            self._texts[question] = torch.nn.functional.normalize(features, dim=-1)
        return self._texts[question]

    @torch.inference_mode()
    def logits(self, images: Sequence[Image.Image], question: str) -> torch.Tensor:
        """[images, texts]: CLIP's scaled cosine similarity of each image to each of the question's texts."""
        if question not in PROMPTS:
            raise ValueError(f"the CLIP detector has no prompts for the question {question!r}")
        texts = self._text_embeddings(question)
        scale = self.model.logit_scale.exp()
        rows = []
        for _, batch in self.batches(images):
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
            features = clip_features(self.model.get_image_features(pixel_values=pixels))
            rows.append(scale * torch.nn.functional.normalize(features, dim=-1) @ texts.T)
        return torch.cat(rows).float().cpu() if rows else torch.zeros(0, len(PROMPTS[question].texts))

    def answer(self, images: Sequence[Image.Image], question: str) -> list[str]:
        return zero_shot_answers(self.logits(images, question), PROMPTS[question], self.margin)
