"""Prompt weighting at the embedding level (diffusers has none for SD3).

Prompts carry Compel-style emphasis: `(film grain)++` weighs "film grain" by 1.1 ** 2. The marks are
removed from the text, the pipeline encodes the clean text with its own `encode_prompt`, and the
rows of the embedding that belong to each weighted span's tokens are scaled by the weight, then
the whole embedding is rescaled to its original mean (as the A1111 web UI does; Compel, whose
syntax the marks follow, does not rescale), so emphasis shifts attention between tokens without
changing the embedding's overall magnitude. With every weight 1
the result is exactly the pipeline's own encoding.

Supported: StableDiffusion3Pipeline (CLIP rows and T5 rows), StableDiffusionPipeline and
StableDiffusionXLPipeline (CLIP rows). Other pipelines take plain prompts, and refuse weights.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from sustaindiffusion.api.candidate import EMPHASIS_PER_MARK

_EMPHASIS = re.compile(r"\(([^()]+)\)(\++)")


class UnsupportedWeightingError(ValueError):
    pass


@dataclass(frozen=True)
class WeightedText:
    text: str  # the clean text, emphasis marks removed
    spans: tuple[tuple[int, int, float], ...]  # (start, end, weight) character spans in `text`

    @property
    def weighted(self) -> bool:
        return any(weight != 1.0 for _, _, weight in self.spans)


def parse_weighted(prompt: str) -> WeightedText:
    """`a, (film grain)++` -> text `a, film grain` with span (3, 13, 1.21)."""
    parts, spans, cursor, length = [], [], 0, 0
    for match in _EMPHASIS.finditer(prompt):
        before = prompt[cursor : match.start()]
        parts.append(before)
        length += len(before)
        inner = match.group(1)
        spans.append((length, length + len(inner), EMPHASIS_PER_MARK ** len(match.group(2))))
        parts.append(inner)
        length += len(inner)
        cursor = match.end()
    parts.append(prompt[cursor:])
    return WeightedText("".join(parts), tuple(spans))


def token_weights(tokenizer: Any, parsed: WeightedText, max_length: int) -> torch.Tensor:
    """One weight per token position, as the pipeline tokenizes the clean text (padded, truncated)."""
    encoding = tokenizer(
        parsed.text,
        padding="max_length",
        max_length=max_length,
        truncation=True,
        return_offsets_mapping=True,
    )
    weights = torch.ones(max_length)
    for position, (start, end) in enumerate(encoding["offset_mapping"][:max_length]):
        if start == end:
            continue  # special and padding tokens
        for span_start, span_end, weight in parsed.spans:
            if start < span_end and end > span_start:
                weights[position] = weight
    return weights


def apply_row_weights(embeds: torch.Tensor, row_weights: torch.Tensor) -> torch.Tensor:
    """Scale rows [0, len(row_weights)) of [batch, rows, features] embeddings, keeping their mean."""
    if torch.all(row_weights == 1.0):
        return embeds
    original_mean = embeds.float().mean(dim=(1, 2), keepdim=True)
    scaled = embeds.float().clone()
    rows = row_weights.shape[0]
    scaled[:, :rows, :] *= row_weights.to(scaled.device)[None, :, None]
    new_mean = scaled.mean(dim=(1, 2), keepdim=True)
    scaled *= original_mean / new_mean.where(new_mean != 0, torch.ones_like(new_mean))
    return scaled.to(embeds.dtype)


def _segments(pipeline: Any) -> list[tuple[Any, int, int]]:
    """(tokenizer, first row, rows) of each tokenizer's part of the prompt embedding."""
    name = type(pipeline).__name__
    clip_rows = int(getattr(pipeline, "tokenizer_max_length", 77))
    if name == "StableDiffusion3Pipeline":
        segments = [(pipeline.tokenizer, 0, clip_rows)]
        if pipeline.text_encoder_3 is not None:
            segments.append((pipeline.tokenizer_3, clip_rows, T5_ROWS))
        return segments
    if name in ("StableDiffusionPipeline", "StableDiffusionXLPipeline"):
        return [(pipeline.tokenizer, 0, pipeline.tokenizer.model_max_length)]
    return []


T5_ROWS = 256  # SD3's default max_sequence_length


def supports_weighting(pipeline: Any) -> bool:
    return bool(_segments(pipeline))


def prompt_arguments(
    pipeline: Any, prompt: str, negative_prompt: str, device: str, images: int, guidance: bool
) -> dict[str, Any]:
    """Keyword arguments for `pipeline(...)`: weighted embeddings where supported, else plain text."""
    positive, negative = parse_weighted(prompt), parse_weighted(negative_prompt)
    if not supports_weighting(pipeline):
        if positive.weighted or negative.weighted:
            raise UnsupportedWeightingError(
                f"prompt weighting is not supported for {type(pipeline).__name__}; use promptWeight 0"
            )
        return {
            "prompt": positive.text,
            "negative_prompt": negative.text or None,
            "num_images_per_prompt": images,
        }
    name = type(pipeline).__name__
    common = {"device": device, "num_images_per_prompt": images, "do_classifier_free_guidance": guidance}
    if name == "StableDiffusion3Pipeline":
        embeds, negative_embeds, pooled, negative_pooled = pipeline.encode_prompt(
            prompt=positive.text, prompt_2=None, prompt_3=None, negative_prompt=negative.text, **common
        )
    elif name == "StableDiffusionXLPipeline":
        embeds, negative_embeds, pooled, negative_pooled = pipeline.encode_prompt(
            prompt=positive.text, prompt_2=None, negative_prompt=negative.text, **common
        )
    else:
        embeds, negative_embeds = pipeline.encode_prompt(
            prompt=positive.text, negative_prompt=negative.text, **common
        )
        pooled = negative_pooled = None
    for tokenizer, first, rows in _segments(pipeline):
        for parsed, target in ((positive, "positive"), (negative, "negative")):
            if not parsed.weighted:
                continue
            weights = torch.cat([torch.ones(first), token_weights(tokenizer, parsed, rows)])
            if target == "positive":
                embeds = apply_row_weights(embeds, weights)
            elif negative_embeds is not None:
                negative_embeds = apply_row_weights(negative_embeds, weights)
    arguments: dict[str, Any] = {"prompt_embeds": embeds, "negative_prompt_embeds": negative_embeds}
    if pooled is not None:
        arguments |= {"pooled_prompt_embeds": pooled, "negative_pooled_prompt_embeds": negative_pooled}
    return arguments
