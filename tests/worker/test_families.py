"""The model families on their tiny pipelines: each is recognised from its loaded pipeline, weight 1
is exactly the pipeline's own encoding, emphasis changes only the weighted tokens' rows of every
text encoder and moves the pooled embedding along what the weighted words add, and what a family
cannot take (a negative prompt on FLUX.1) is refused with a clear reason."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.families import ModelFamily
from sustaindiffusion.worker.errors import CandidateError, PermanentTaskError
from sustaindiffusion.worker.families import adapter_for
from sustaindiffusion.worker.generation import ImageGenerator
from sustaindiffusion.worker.weighting import parse_weighted, token_weights
from tests.support.family_models import FAMILY_MODELS, family_model

PLAIN = "Photo portrait, photograph, film grain"
WEIGHTED = "Photo portrait, (photograph)+++, film grain"
WITHOUT_WEIGHTED = "Photo portrait, film grain"
NEGATIVE = "lowres"

EXPECTED = {  # folder: (family, default steps, default guidance)
    "sd1": (ModelFamily.STABLE_DIFFUSION, 50, 7.5),
    "sdxl": (ModelFamily.STABLE_DIFFUSION_XL, 50, 5.0),
    "sd3": (ModelFamily.STABLE_DIFFUSION_3, 28, 7.0),
    "sd35": (ModelFamily.STABLE_DIFFUSION_35, 40, 4.5),  # the tiny 3.5 has a dual-attention layer: Medium
    "flux-dev": (ModelFamily.FLUX1_DEV, 50, 3.5),
    "flux-schnell": (ModelFamily.FLUX1_SCHNELL, 4, 0.0),
}
FLUX = ("flux-dev", "flux-schnell")


def pipelines_own_encoding(pipeline: Any, prompt: str, negative: str) -> dict[str, torch.Tensor]:
    """The pipeline's `encode_prompt`, called as the pipeline itself calls it for a text prompt."""
    common = {"device": "cpu", "num_images_per_prompt": 2}
    if hasattr(pipeline, "tokenizer_3"):  # SD3 and SD3.5
        encoded = pipeline.encode_prompt(
            prompt=prompt, prompt_2=None, prompt_3=None, negative_prompt=negative,
            do_classifier_free_guidance=True, **common,
        )  # fmt: skip
    elif hasattr(pipeline, "transformer"):  # FLUX.1: no negative prompt
        embeds, pooled, _ids = pipeline.encode_prompt(prompt=prompt, prompt_2=None, **common)
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
    else:  # SDXL (its second prompt defaults to the first) and SD 1.x/2.x
        encoded = pipeline.encode_prompt(
            prompt=prompt, negative_prompt=negative, do_classifier_free_guidance=True, **common
        )
    names = [
        "prompt_embeds",
        "negative_prompt_embeds",
        "pooled_prompt_embeds",
        "negative_pooled_prompt_embeds",
    ]
    return dict(zip(names, encoded, strict=False))


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_the_family_and_its_defaults_come_from_the_loaded_pipeline(
    name: str, family_pipeline: Callable[[str], Any], tiny_models: Path
) -> None:
    family, steps, guidance = EXPECTED[name]
    generator = ImageGenerator(family_pipeline(name), family_model(tiny_models, name), "cpu")
    assert generator.adapter.family is family
    resolved = generator.resolve(CandidateSettings())
    assert (resolved.inference_steps, resolved.guidance_scale) == (steps, guidance)


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_weight_one_is_the_pipelines_own_encoding(name: str, family_pipeline: Callable[[str], Any]) -> None:
    pipeline = family_pipeline(name)
    negative = "" if name in FLUX else NEGATIVE
    ours = adapter_for(pipeline).prompt_arguments(PLAIN, negative, "cpu", 2, guidance_scale=5.0)
    reference = pipelines_own_encoding(pipeline, PLAIN, negative)
    assert set(ours) == set(reference)
    for key, expected in reference.items():
        assert torch.equal(ours[key], expected), key


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_emphasis_scales_only_the_weighted_tokens_rows_of_every_encoder(
    name: str, family_pipeline: Callable[[str], Any]
) -> None:
    pipeline = family_pipeline(name)
    adapter = adapter_for(pipeline)
    plain = adapter.prompt_arguments(PLAIN, "", "cpu", 1, guidance_scale=5.0)["prompt_embeds"][0]
    weighted = adapter.prompt_arguments(WEIGHTED, "", "cpu", 1, guidance_scale=5.0)["prompt_embeds"][0]
    parsed = parse_weighted(WEIGHTED)
    segments = adapter.segments()
    assert len(segments) == {"sd1": 1, "sdxl": 2, "sd3": 3, "sd35": 3, "flux-dev": 1, "flux-schnell": 1}[name]
    covered = torch.zeros_like(plain, dtype=torch.bool)
    for segment in segments:
        rows = slice(segment.first_row, segment.first_row + segment.rows)
        a, b = plain[rows, segment.features], weighted[rows, segment.features]
        covered[rows, segment.features] = True
        weights = token_weights(segment.tokenizer, parsed, segment.rows)
        weighted_rows = (weights != 1.0).nonzero().flatten().tolist()
        assert weighted_rows, "the weighted word has tokens in every encoder"
        assert torch.allclose(a.mean(), b.mean(), atol=1e-5)  # each encoder's block keeps its mean
        ratio = b / torch.where(a == 0, torch.ones_like(a), a)
        common = ratio[int((weights == 1.0).nonzero()[0])].median()
        for row in range(segment.rows):  # every row by the same factor, weighted rows by 1.331 more
            expected = common * (1.331 if row in weighted_rows else 1.0)
            assert torch.allclose(ratio[row][a[row] != 0].median(), expected, rtol=1e-3), row
    assert torch.equal(plain[~covered], weighted[~covered])  # e.g. SD3's zero padding of CLIP features


@pytest.mark.parametrize("name", ["sdxl", "sd3", "sd35", "flux-dev", "flux-schnell"])
def test_emphasis_moves_the_pooled_embedding_along_what_the_weighted_words_add(
    name: str, family_pipeline: Callable[[str], Any]
) -> None:
    pipeline = family_pipeline(name)
    ours = adapter_for(pipeline).prompt_arguments(WEIGHTED, "", "cpu", 1, guidance_scale=5.0)
    with_word = pipelines_own_encoding(pipeline, PLAIN, "")["pooled_prompt_embeds"][:1]
    without_word = pipelines_own_encoding(pipeline, WITHOUT_WEIGHTED, "")["pooled_prompt_embeds"][:1]
    expected = with_word + (1.331 - 1.0) * (with_word - without_word)
    assert not torch.allclose(ours["pooled_prompt_embeds"], with_word)
    assert torch.allclose(ours["pooled_prompt_embeds"], expected, atol=1e-5)


@pytest.mark.parametrize("name", ["sd1", "sdxl", "sd3"])
def test_negative_emphasis_changes_only_the_negative_embedding(
    name: str, family_pipeline: Callable[[str], Any]
) -> None:
    adapter = adapter_for(family_pipeline(name))
    plain = adapter.prompt_arguments(PLAIN, "lowres, drawing", "cpu", 1, guidance_scale=5.0)
    weighted = adapter.prompt_arguments(PLAIN, "(lowres)++, drawing", "cpu", 1, guidance_scale=5.0)
    assert torch.equal(plain["prompt_embeds"], weighted["prompt_embeds"])
    assert not torch.equal(plain["negative_prompt_embeds"], weighted["negative_prompt_embeds"])


@pytest.mark.parametrize("name", FLUX)
def test_a_negative_prompt_on_flux_is_refused_for_the_candidate(
    name: str, family_pipeline: Callable[[str], Any]
) -> None:
    with pytest.raises(CandidateError, match="has no negative prompt") as raised:
        adapter_for(family_pipeline(name)).prompt_arguments(PLAIN, NEGATIVE, "cpu", 1, guidance_scale=3.5)
    assert not raised.value.retryable
    assert "FLUX.1" in raised.value.reason


def test_a_declared_family_must_be_the_one_loaded(family_pipeline: Callable[[str], Any]) -> None:
    with pytest.raises(PermanentTaskError, match=r"model.family is Flux1Dev .* loads as FLUX\.1-schnell"):
        adapter_for(family_pipeline("flux-schnell"), ModelFamily.FLUX1_DEV)
    with pytest.raises(PermanentTaskError, match=r"loads as Stable Diffusion 3\.5"):
        adapter_for(family_pipeline("sd35"), ModelFamily.STABLE_DIFFUSION_3)
    assert adapter_for(family_pipeline("sdxl"), ModelFamily.STABLE_DIFFUSION_XL).family is (
        ModelFamily.STABLE_DIFFUSION_XL
    )


@pytest.mark.parametrize("name", FAMILY_MODELS)
def test_every_family_generates_with_weighted_keywords(
    name: str, family_pipeline: Callable[[str], Any], tiny_models: Path
) -> None:
    settings = CandidateSettings(
        inference_steps=2,
        guidance_scale=0.0 if name == "flux-schnell" else 4.0,
        positive_keywords=["photograph"],
        negative_keywords=[] if name in FLUX else ["lowres"],
        prompt_weight=2,
    )
    generator = ImageGenerator(family_pipeline(name), family_model(tiny_models, name), "cpu")
    weighted = generator.generate(settings, "Photo portrait of a Software Engineer", [1, 2])
    plain = generator.generate(
        settings.model_copy(update={"prompt_weight": 0}), "Photo portrait of a Software Engineer", [1]
    )
    assert [image.size for image in weighted] == [(64, 64), (64, 64)]
    assert not np.array_equal(np.asarray(weighted[0]), np.asarray(plain[0]))  # emphasis reaches the image
