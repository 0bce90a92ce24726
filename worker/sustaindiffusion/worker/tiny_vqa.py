"""The tiny VQA model: random BLIP weights whose answer head is fitted offline so that each question
is answered with one word of its own answer group, the word depending on the image.

With wholly random weights a VQA model answers every question with the same few words, mostly
ones no group holds, so a search's biases never move. Here only the last layer (the decoder's
output rows and biases, untied from the input embeddings) is fitted, by logistic regression on the
decoder's own first-step states for images from the tiny SD3 pipeline:

- answers are read along the directions in which images started from the same noise differ most
  (against how much images from different noises differ): so that they change with the settings,
  not only with the seed, and a search's biases move;
- the human question is answered "yes", "no" for the tenth of images lowest along one direction;
- the gender question "female" or "male", the ethnicity question one of the method's four groups,
  by which of the group's directions the (standardised) state lies furthest along, so that answers
  split about evenly over the calibration images;
- after the first word, the end token (states of every answer word fed back, on noise images too).

The answers mean nothing about the image; they exercise the answer mapping, the counts and the
bias statistics end to end, with values that vary between candidates. Deterministic: seeded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForQuestionAnswering,
    BlipImageProcessor,
    BlipProcessor,
)

from sustaindiffusion.worker.answer_groups import ETHNIC_GROUPS
from sustaindiffusion.worker.scoring import ETHNICITY_QUESTION, GENDER_QUESTION, HUMAN_QUESTION

ANSWERS: dict[str, tuple[str, ...]] = {
    HUMAN_QUESTION: ("yes", "no"),
    GENDER_QUESTION: ("female", "male"),
    ETHNICITY_QUESTION: tuple(ETHNIC_GROUPS),  # the group names are answers of their own groups
}
NOT_HUMAN_SHARE = 0.1
HIDDEN = 32
FIT_STEPS = 1500
MASKED = -1000.0  # the bias of every token that is neither an answer word nor the end


def build_blip_vqa(
    directory: Path,
    seed: int,
    tokenizer: BertTokenizer,
    vision: dict[str, int],
    calibration: list[Image.Image],
    noises: list[int],
) -> None:
    """Build and save the model. `calibration`: images like those it will be asked about, each
    initial noise under several settings; `noises`: which noise each image started from."""
    torch.manual_seed(seed)
    config = BlipConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": HIDDEN,
            "intermediate_size": 2 * HIDDEN,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 64,
            "encoder_hidden_size": HIDDEN,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.cls_token_id,
            "sep_token_id": tokenizer.sep_token_id,
            "tie_word_embeddings": False,
        },
        # The usual initialisation scale, not BLIP's 1e-10, so that the image reaches the answer.
        vision_config=vision | {"initializer_range": 0.02},
        tie_word_embeddings=False,
    )
    model = BlipForQuestionAnswering(config).eval()
    with torch.no_grad():
        for part in (model.text_encoder, model.text_decoder.bert):
            for layer in part.encoder.layer:
                if getattr(layer, "crossattention", None) is not None:  # the image, then, matters
                    layer.crossattention.self.value.weight.mul_(10.0)
                    layer.crossattention.output.dense.weight.mul_(10.0)
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
    )
    _fit_answer_head(model, processor, tokenizer, calibration, noises, seed)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)


def _noise_images(count: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)) for _ in range(count)]


class _DecoderStates:
    """The decoder's last hidden states (what the answer head reads), computed as `generate` does."""

    def __init__(self, model: BlipForQuestionAnswering, processor: BlipProcessor, start: int) -> None:
        self.model, self.processor, self.start = model, processor, start
        self.captured: list[torch.Tensor] = []
        head = model.text_decoder.cls.predictions
        head.transform.register_forward_hook(lambda _m, _i, output: self.captured.append(output))

    @torch.no_grad()
    def __call__(
        self, question: str, images: list[Image.Image], fed_back: torch.Tensor | None
    ) -> torch.Tensor:
        """[images, positions, hidden]: the start token's state, then `fed_back` tokens' ([images, n])."""
        inputs = self.processor(images=images, text=[question] * len(images), return_tensors="pt")
        image_states = self.model.vision_model(pixel_values=inputs.pixel_values)[0]
        question_states = self.model.text_encoder(
            input_ids=inputs.input_ids,
            attention_mask=inputs.attention_mask,
            encoder_hidden_states=image_states,
            encoder_attention_mask=torch.ones(image_states.shape[:-1], dtype=torch.long),
        )[0]
        ids = torch.full((len(images), 1), self.start)
        if fed_back is not None:
            ids = torch.cat([ids, fed_back], dim=1)
        self.captured.clear()
        self.model.text_decoder(
            input_ids=ids,
            encoder_hidden_states=question_states,
            encoder_attention_mask=torch.ones(question_states.shape[:-1], dtype=torch.long),
        )
        return self.captured[-1]


def _setting_directions(states: torch.Tensor, noises: list[int], count: int) -> torch.Tensor:
    """[count, hidden]: the directions with the most variance between images of the same noise per
    variance between noises (a generalised eigenproblem, regularised: the noises are a sample)."""
    labels = sorted(set(noises))
    ids, inverse = torch.tensor(noises), torch.tensor([labels.index(noise) for noise in noises])
    means = torch.stack([states[ids == label].mean(dim=0) for label in labels])
    within = states - means[inverse]
    between = means - means.mean(dim=0)
    within_cov = within.T @ within / len(states)
    between_cov = between.T @ between / len(labels)
    hidden = states.shape[1]
    between_cov = between_cov + 0.1 * between_cov.trace() / hidden * torch.eye(hidden)
    whitening = torch.linalg.inv(torch.linalg.cholesky(between_cov))
    _, vectors = torch.linalg.eigh(whitening @ within_cov @ whitening.T)  # ascending
    directions: torch.Tensor = (whitening.T @ vectors[:, -count:].flip(1)).T
    return directions


def _choices(states: torch.Tensor, directions: torch.Tensor, question: str) -> torch.Tensor:
    """Per image, the index of its answer in the question's group."""
    along = (states - states.mean(dim=0)) @ directions.T
    if question == HUMAN_QUESTION:  # "no" (index 1) for the lowest tenth along its direction
        return (along[:, 0] < torch.quantile(along[:, 0], NOT_HUMAN_SHARE)).long()
    along = (along - along.mean(dim=0)) / along.std(dim=0)
    return along.argmax(dim=1)


def _fit_answer_head(
    model: BlipForQuestionAnswering,
    processor: BlipProcessor,
    tokenizer: BertTokenizer,
    images: list[Image.Image],
    noises: list[int],
    seed: int,
) -> None:
    vocab = tokenizer.get_vocab()
    words = [word for group in ANSWERS.values() for word in group]
    targets = [vocab[word] for word in words] + [tokenizer.sep_token_id]
    end = len(words)
    generator = np.random.default_rng(seed)
    states = _DecoderStates(model, processor, tokenizer.cls_token_id)
    noise = _noise_images(len(images) // 2, seed)
    inputs, labels = [], []
    offset = 0  # each question reads its own directions: gender, ethnicity, then human
    for question, group in sorted(ANSWERS.items(), key=lambda item: item[0] == HUMAN_QUESTION):
        first = states(question, images, None)[:, 0]
        wanted = 1 if question == HUMAN_QUESTION else len(group)
        directions = _setting_directions(first, noises, offset + wanted)[offset:]
        offset += wanted
        chosen = _choices(first, directions, question)
        inputs.append(first)
        labels.append(torch.tensor([words.index(group[c]) for c in chosen.tolist()]))
        for batch in (images, noise):  # after any answer word, on any image: the end
            fed = [[targets[i]] for i in generator.integers(0, len(words), size=len(batch)).tolist()]
            inputs.append(states(question, batch, torch.tensor(fed))[:, 1])
            labels.append(torch.full((len(batch),), end))
    x, y = torch.cat(inputs), torch.cat(labels)
    torch.manual_seed(seed)
    weight = torch.zeros(len(targets), x.shape[1], requires_grad=True)
    bias = torch.zeros(len(targets), requires_grad=True)
    optimiser = torch.optim.Adam([weight, bias], lr=0.05)
    for _ in range(FIT_STEPS):
        loss = torch.nn.functional.cross_entropy(x @ weight.T + bias, y) + 1e-4 * weight.square().sum()
        optimiser.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
    head = model.text_decoder.cls.predictions
    with torch.no_grad():
        head.decoder.weight[targets] = weight
        head.bias.fill_(MASKED)
        head.bias[targets] = bias
        head.decoder.bias.copy_(head.bias)  # untied, the linear layer keeps its own copy
