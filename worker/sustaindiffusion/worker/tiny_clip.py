"""The tiny CLIP detector: random CLIP weights whose two projections are set offline so that the
zero-shot rule (`clip_detector`) answers each question with a label that depends on the image.

With wholly random weights every image is nearest to the same prompt (the tiny CLIP of the quality
scorer answers "no", "male" and "arab" to everything), so the Clip family would find no person and
a cross-check would compare nothing. Here, as for the tiny VQA model (`tiny_vqa`), only what is
read last is set, from the tiny SD3 pipeline's own images:

- the text projection, by least squares, maps every prompt of a label to that label's own unit
  direction (one of eight orthogonal ones: yes, no, female, male and the four groups);
- the vision tower's last layer norm gets a bias along the all-ones direction, so that the pooled
  state holds a constant (a layer norm's output sums to zero) and a projection row can add an
  offset;
- each label's row of the visual projection reads the pooled state along one of the directions in
  which images started from the same noise differ most (`tiny_vqa._setting_directions`), so that
  answers change with the settings, not only with the seed; standardised on the calibration
  images, "yes" leads for the nine tenths of them highest along its direction, female or male by
  the sign along another, a group by which of four it lies furthest along;
- the logit scale is 5, so that images near a boundary lead by less than the margin: can't tell.

The answers mean nothing about the image; they exercise the zero-shot rule, the human filter, the
cross-check's counts and the bias statistics end to end. Deterministic: seeded.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTextConfig,
    CLIPTokenizer,
)

from sustaindiffusion.worker.clip_detector import PROMPTS
from sustaindiffusion.worker.scoring import ETHNICITY_QUESTION, GENDER_QUESTION, HUMAN_QUESTION
from sustaindiffusion.worker.tiny_vqa import NOT_HUMAN_SHARE, _setting_directions

PROJECTION = 16
LOGIT_SCALE = 5.0
SIGNAL = 1.0  # a label row's weight per standard deviation along its direction
# The label directions of the projected space, in question order (yes, no, female, male, groups).
LABELS = [(question, label) for question in PROMPTS for label in PROMPTS[question].labels]


def build_clip_detector(
    directory: Path,
    seed: int,
    tokenizer: CLIPTokenizer,
    text: CLIPTextConfig,
    vision: dict[str, int],
    calibration: list[Image.Image],
    noises: list[int],
) -> None:
    """Build and save the model. `calibration`: images like those it will be asked about, each
    initial noise under several settings; `noises`: which noise each image started from."""
    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=text.to_dict() | {"projection_dim": PROJECTION},
        vision_config=vision | {"projection_dim": PROJECTION},
        projection_dim=PROJECTION,
        logit_scale_init_value=math.log(LOGIT_SCALE),
    )
    model = CLIPModel(config).eval()
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    with torch.no_grad():
        _fit_text(model, processor)
        _fit_vision(model, processor, calibration, noises)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)


def _fit_text(model: CLIPModel, processor: CLIPProcessor) -> None:
    """Every prompt of a label projects onto that label's unit direction (least squares)."""
    texts, targets = [], []
    for index, (question, label) in enumerate(LABELS):
        for prompt in PROMPTS[question].prompts[label]:
            texts.append(prompt)
            targets.append(torch.eye(PROJECTION)[index])
    inputs = processor(text=texts, return_tensors="pt", padding=True)
    pooled = model.text_model(
        input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
    ).pooler_output
    solution = torch.linalg.lstsq(pooled, torch.stack(targets)).solution  # [hidden, projection]
    model.text_projection.weight.copy_(solution.T)


def _fit_vision(
    model: CLIPModel, processor: CLIPProcessor, images: list[Image.Image], noises: list[int]
) -> None:
    vision = model.vision_model
    hidden = vision.post_layernorm.bias.shape[0]
    ones = torch.ones(hidden) / math.sqrt(hidden)
    vision.post_layernorm.bias.copy_(ones)  # the pooled state's component along `ones` is 1
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    states: torch.Tensor = vision(pixel_values=pixels).pooler_output  # [images, hidden]
    directions = _setting_directions(states, noises, 6)  # person, gender, then the four groups
    along = states @ directions.T
    mean, spread = along.mean(dim=0), along.std(dim=0)
    threshold = torch.quantile((along[:, 0] - mean[0]) / spread[0], NOT_HUMAN_SHARE)

    def row(direction: int, sign: float, offset: float = 0.0) -> torch.Tensor:
        """Reads SIGNAL * sign * (z - offset), z the standardised position along `direction`."""
        scale = SIGNAL * sign / spread[direction]
        constant = -SIGNAL * sign * (mean[direction] / spread[direction] + offset)
        return scale * directions[direction] + constant * ones

    rows = torch.zeros(PROJECTION, hidden)
    place = {entry: index for index, entry in enumerate(LABELS)}
    rows[place[(HUMAN_QUESTION, "yes")]] = row(0, 0.5, float(threshold))
    rows[place[(HUMAN_QUESTION, "no")]] = row(0, -0.5, float(threshold))
    rows[place[(GENDER_QUESTION, "female")]] = row(1, 0.5)
    rows[place[(GENDER_QUESTION, "male")]] = row(1, -0.5)
    for offset, group in enumerate(PROMPTS[ETHNICITY_QUESTION].labels):
        rows[place[(ETHNICITY_QUESTION, group)]] = row(2 + offset, 1.0)
    model.visual_projection.weight.copy_(rows)
