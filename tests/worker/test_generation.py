"""Generation on the tiny pipelines: seeds, defaults, batching, prompt weighting at the embedding level."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.spec import ModelSpec, SeedMode, SeedPolicy
from sustaindiffusion.api.task import image_seed
from sustaindiffusion.worker.generation import ImageGenerator
from sustaindiffusion.worker.weighting import (
    apply_segment_weights,
    parse_weighted,
    token_weights,
    without_weight,
)

PROMPT = "Photo portrait of a Software Engineer that codes."
SETTINGS = CandidateSettings(inference_steps=3, guidance_scale=5.0)


def test_parse_weighted_removes_marks_and_records_spans() -> None:
    parsed = parse_weighted("a portrait, (film grain)++, photograph, (lowres)+")
    assert parsed.text == "a portrait, film grain, photograph, lowres"
    assert parsed.spans[0][:2] == (12, 22)
    assert parsed.text[12:22] == "film grain"
    assert parsed.spans[0][2] == pytest.approx(1.21)
    assert parsed.spans[1][2] == pytest.approx(1.1)
    assert parse_weighted("plain (not weighted) text").spans == ()
    assert not parse_weighted("plain").weighted


def test_token_weights_cover_exactly_the_weighted_tokens(sd3_pipeline: Any) -> None:
    tokenizer = sd3_pipeline.tokenizer
    parsed = parse_weighted("a portrait, (photograph)+++")
    weights = token_weights(tokenizer, parsed, 77)
    tokens = tokenizer(parsed.text, return_offsets_mapping=True)
    weighted_positions = [i for i, w in enumerate(weights.tolist()) if w != 1.0]
    assert weighted_positions
    for position in weighted_positions:
        start, end = tokens["offset_mapping"][position]
        assert parsed.text[start:end] in "photograph"
    assert weights[weighted_positions[0]].item() == pytest.approx(1.331)


def test_segment_weights_keep_the_blocks_mean_and_leave_the_rest() -> None:
    embeds = torch.rand(2, 5, 6) + 0.5
    weights = torch.tensor([1.0, 1.5, 1.0])
    scaled = apply_segment_weights(embeds, 1, weights, slice(2, 4))
    block = (slice(None), slice(1, 4), slice(2, 4))
    assert torch.allclose(scaled[block].mean(dim=(1, 2)), embeds[block].mean(dim=(1, 2)), atol=1e-6)
    assert not torch.allclose(scaled[block], embeds[block])
    outside = torch.ones_like(embeds, dtype=torch.bool)
    outside[block] = False
    assert torch.equal(scaled[outside], embeds[outside])
    assert apply_segment_weights(embeds, 0, torch.ones(3)) is embeds


def test_text_without_a_weight_drops_those_spans_and_their_commas() -> None:
    parsed = parse_weighted("(a portrait)++, photograph, (film grain)++, (lowres)+")
    assert without_weight(parsed, 1.1**2) == "photograph, lowres"
    assert without_weight(parsed, 1.1) == "a portrait, photograph, film grain"


def test_equal_seeds_give_equal_images_and_batching_does_not_change_them(
    sd3_pipeline: Any, sd3_model: ModelSpec
) -> None:
    generator = ImageGenerator(sd3_pipeline, sd3_model, "cpu", max_batch=4)
    batched = generator.generate(SETTINGS, PROMPT, [11, 12, 13])
    one_by_one = ImageGenerator(sd3_pipeline, sd3_model, "cpu", max_batch=1).generate(
        SETTINGS, PROMPT, [11, 12, 13]
    )
    assert len(batched) == 3
    assert batched[0].size == (64, 64)
    for a, b in zip(batched, one_by_one, strict=True):
        assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1
    assert not np.array_equal(np.asarray(batched[0]), np.asarray(batched[1]))


def _call_defaults(pipeline: Any) -> tuple[int, float]:
    parameters = inspect.signature(pipeline.__call__).parameters
    return parameters["num_inference_steps"].default, parameters["guidance_scale"].default


def test_absent_settings_generate_what_the_pipelines_own_defaults_generate(
    sd3_pipeline: Any, sd1_pipeline: Any, sd3_model: ModelSpec
) -> None:
    """A setting the candidate leaves out is the pipeline's own default (its call signature's),
    never a number of ours: the images equal those of the default given explicitly; a setting
    the candidate gives wins."""
    generator = ImageGenerator(sd3_pipeline, sd3_model, "cpu")
    steps, guidance = _call_defaults(sd3_pipeline)
    assert generator.resolve(CandidateSettings()) == generator.resolve(
        CandidateSettings(inference_steps=steps, guidance_scale=guidance)
    )
    absent = generator.generate(CandidateSettings(inference_steps=2), PROMPT, [5])
    given = generator.generate(CandidateSettings(inference_steps=2, guidance_scale=guidance), PROMPT, [5])
    other = generator.generate(CandidateSettings(inference_steps=2, guidance_scale=guidance + 3), PROMPT, [5])
    assert np.array_equal(np.asarray(absent[0]), np.asarray(given[0]))
    assert not np.array_equal(np.asarray(absent[0]), np.asarray(other[0]))
    sd1 = ImageGenerator(sd1_pipeline, sd3_model, "cpu").resolve(CandidateSettings(inference_steps=9))
    assert (sd1.inference_steps, sd1.guidance_scale) == (9, _call_defaults(sd1_pipeline)[1])


def test_sd1_generates_with_weighted_keywords(sd1_pipeline: Any, sd1_model: ModelSpec) -> None:
    settings = CandidateSettings(
        inference_steps=2,
        guidance_scale=4.0,
        positive_keywords=["photograph"],
        negative_keywords=["lowres"],
        prompt_weight=3,
    )
    images = ImageGenerator(sd1_pipeline, sd1_model, "cpu").generate(settings, PROMPT, [1, 2])
    assert [image.size for image in images] == [(64, 64), (64, 64)]


def test_seed_policy() -> None:
    same = SeedPolicy(base=5, mode=SeedMode.SAME_FOR_ALL_CANDIDATES)
    per = SeedPolicy(base=5, mode=SeedMode.PER_CANDIDATE)
    assert image_seed(same, 0, 1, "aaaa") == image_seed(same, 0, 1, "bbbb")
    assert image_seed(per, 0, 1, "aaaa") != image_seed(per, 0, 1, "bbbb")
    assert image_seed(same, 0, 1, "a") != image_seed(same, 0, 2, "a")
    assert image_seed(same, 0, 1, "a", attempt=1) != image_seed(same, 0, 1, "a")
    assert image_seed(same, 0, 1, "a") == image_seed(SeedPolicy(base=5), 0, 1, "a")


def test_calls_are_cut_where_they_are_asked_and_within_the_largest_batch(
    sd3_pipeline: Any, sd3_model: ModelSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Calls of 1, 3, 2 images with a largest batch of 2: each call is its own batch or batches,
    never one image of another call with it."""
    generator = ImageGenerator(sd3_pipeline, sd3_model, "cpu", max_batch=2)
    chunks: list[list[int]] = []
    original = generator._generate_batch

    def recording(settings: Any, resolved: Any, prompt: str, seeds: Sequence[int]) -> Any:
        chunks.append(list(seeds))
        return original(settings, resolved, prompt, seeds)

    monkeypatch.setattr(generator, "_generate_batch", recording)
    images = generator.generate(SETTINGS, PROMPT, [1, 2, 3, 4, 5, 6], calls=[1, 3, 2])
    assert len(images) == 6
    assert chunks == [[1], [2, 3], [4], [5, 6]]
    with pytest.raises(ValueError, match="calls of 5 images for 6 seeds"):
        generator.generate(SETTINGS, PROMPT, [1, 2, 3, 4, 5, 6], calls=[2, 3])
