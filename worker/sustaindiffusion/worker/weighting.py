"""Prompt weighting at the embedding level (diffusers has none), for every family (`families`).

Prompts carry Compel-style emphasis: `(film grain)++` weighs "film grain" by 1.1 ** 2. The marks are
removed from the text, the pipeline encodes the clean text with its own `encode_prompt`, and the
rows of the embedding that belong to each weighted span's tokens are scaled by the weight, then
each text encoder's block of the embedding is rescaled to its original mean (as the A1111 web UI
does; Compel, whose syntax the marks follow, does not rescale), so emphasis shifts attention between
tokens without changing the embedding's overall magnitude. With every weight 1 the result is
exactly the pipeline's own encoding.

Which rows and features belong to which tokenizer, and how pooled embeddings take emphasis, is
each family's business (`families`); this module holds the parsing and the arithmetic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from sustaindiffusion.api.candidate import EMPHASIS_PER_MARK

_EMPHASIS = re.compile(r"\(([^()]+)\)(\++)")


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


def apply_segment_weights(
    embeds: torch.Tensor, first_row: int, row_weights: torch.Tensor, features: slice = slice(None)
) -> torch.Tensor:
    """Scale rows [first_row, first_row + len(row_weights)) of the `features` of [batch, rows,
    features] embeddings by their weights, then bring that block back to its own mean (each text
    encoder's block keeps its scale)."""
    if torch.all(row_weights == 1.0):
        return embeds
    rows = slice(first_row, first_row + row_weights.shape[0])
    block = embeds[:, rows, features].float()
    original_mean = block.mean(dim=(1, 2), keepdim=True)
    scaled = block * row_weights.to(block.device)[None, :, None]
    new_mean = scaled.mean(dim=(1, 2), keepdim=True)
    scaled *= original_mean / new_mean.where(new_mean != 0, torch.ones_like(new_mean))
    result = embeds.clone()
    result[:, rows, features] = scaled.to(embeds.dtype)
    return result


_SEPARATOR_BEFORE = re.compile(r",\s*$")


def without_weight(parsed: WeightedText, weight: float) -> str:
    """The clean text without the spans of `weight` (and the comma that led into each)."""
    pieces, cursor = [], 0
    for start, end, span_weight in parsed.spans:
        if span_weight == weight:
            pieces.append(_SEPARATOR_BEFORE.sub("", parsed.text[cursor:start]))
            cursor = end
    pieces.append(parsed.text[cursor:])
    return " ".join("".join(pieces).split()).lstrip(", ")
