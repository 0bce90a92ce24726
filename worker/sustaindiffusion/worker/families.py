"""Per-family generation: one adapter per model family, chosen from the loaded pipeline's class.

An adapter knows how its family encodes a prompt (which text encoders fill which rows and features
of the prompt embedding, and which give the pooled embedding), whether a negative prompt and
classifier-free guidance exist, and the family's default steps and guidance (the model cards'
recommendations, used for the defaults baseline). Emphasis (`weighting`) is applied to every
encoder's rows and to the pooled embedding, so a weight does the same thing on every family, and
with every weight 1 the arguments are exactly the pipeline's own encoding.

| family            | sequence rows weighted          | pooled          | negative | guidance    |
| SD 1.x/2.x        | CLIP                            | none            | yes      | CFG         |
| SDXL              | CLIP-L, OpenCLIP-G (own tokens) | OpenCLIP-G      | yes      | CFG         |
| SD3, SD3.5        | CLIP-L, CLIP-G, T5              | CLIP-L + CLIP-G | yes      | CFG         |
| FLUX.1-dev        | T5                              | CLIP-L          | no       | distilled   |
| FLUX.1-schnell    | T5                              | CLIP-L          | no       | none        |
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from sustaindiffusion.api.families import FAMILIES, GuidanceKind, ModelFamily
from sustaindiffusion.worker.errors import CandidateError, PermanentTaskError
from sustaindiffusion.worker.weighting import (
    WeightedText,
    apply_segment_weights,
    parse_weighted,
    token_weights,
    without_weight,
)

SD3_T5_ROWS = 256  # StableDiffusion3Pipeline's default max_sequence_length
FLUX_T5_ROWS = 512  # FluxPipeline's default max_sequence_length


@dataclass(frozen=True)
class Segment:
    """A block of the prompt embedding filled by one text encoder: its tokenizer, the rows its
    tokens fill, and the features (the last dimension) that are its own."""

    tokenizer: Any
    first_row: int
    rows: int
    features: slice


@dataclass(frozen=True)
class Defaults:
    inference_steps: int
    guidance_scale: float


@dataclass
class Encoding:
    embeds: torch.Tensor
    negative_embeds: torch.Tensor | None
    pooled: torch.Tensor | None
    negative_pooled: torch.Tensor | None


class FamilyAdapter:
    """A pipeline that takes plain prompts: no emphasis, its own call signature's defaults."""

    family: ModelFamily | None = None

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline

    @property
    def guidance(self) -> GuidanceKind:
        return FAMILIES[self.family].guidance if self.family else GuidanceKind.CLASSIFIER_FREE

    @property
    def title(self) -> str:
        return FAMILIES[self.family].title if self.family else type(self.pipeline).__name__

    def defaults(self) -> Defaults:
        parameters = inspect.signature(self.pipeline.__call__).parameters
        return Defaults(
            int(parameters["num_inference_steps"].default), float(parameters["guidance_scale"].default)
        )

    def prompt_arguments(
        self, prompt: str, negative_prompt: str, device: str, images: int, guidance_scale: float
    ) -> dict[str, Any]:
        """Keyword arguments for `pipeline(...)` that carry the prompts."""
        positive, negative = parse_weighted(prompt), parse_weighted(negative_prompt)
        if negative.text and self.guidance is not GuidanceKind.CLASSIFIER_FREE:
            raise CandidateError(
                f"{self.title} has no negative prompt (no classifier-free guidance): set "
                "searchSpace.negativeKeywords to fixed: [] (model.family lets validation refuse it up front)",
                retryable=False,
            )
        if not self.segments():
            if positive.weighted or negative.weighted:
                raise CandidateError(
                    f"prompt weighting is not supported for {type(self.pipeline).__name__}; "
                    "use promptWeight 0",
                    retryable=False,
                )
            return {
                "prompt": positive.text,
                "negative_prompt": negative.text or None,
                "num_images_per_prompt": images,
            }
        cfg = self.guidance is GuidanceKind.CLASSIFIER_FREE and guidance_scale > 1.0
        encoding = self.encode(positive.text, negative.text, device, images, cfg)
        for segment in self.segments():
            if positive.weighted:
                encoding.embeds = _weigh(encoding.embeds, segment, positive)
            if negative.weighted and encoding.negative_embeds is not None:
                encoding.negative_embeds = _weigh(encoding.negative_embeds, segment, negative)
        if encoding.pooled is not None and positive.weighted:
            encoding.pooled = self._emphasise_pooled(encoding.pooled, positive, device)
        if encoding.negative_pooled is not None and negative.weighted:
            encoding.negative_pooled = self._emphasise_pooled(encoding.negative_pooled, negative, device)
        return self.arguments(encoding)

    # ------------------------------------------------------------------ what each family provides

    def segments(self) -> list[Segment]:
        return []

    def encode(self, prompt: str, negative_prompt: str, device: str, images: int, cfg: bool) -> Encoding:
        raise NotImplementedError

    def pooled_of(self, text: str, device: str) -> torch.Tensor | None:
        """The pooled embedding of one text, as the family's encoders compute it (None: no pooled)."""
        return None

    def arguments(self, encoding: Encoding) -> dict[str, Any]:
        arguments: dict[str, Any] = {"prompt_embeds": encoding.embeds}
        if encoding.negative_embeds is not None:
            arguments["negative_prompt_embeds"] = encoding.negative_embeds
        if encoding.pooled is not None:
            arguments["pooled_prompt_embeds"] = encoding.pooled
        if encoding.negative_pooled is not None:
            arguments["negative_pooled_prompt_embeds"] = encoding.negative_pooled
        return arguments

    # ------------------------------------------------------------------ shared helpers

    def _emphasise_pooled(self, pooled: torch.Tensor, parsed: WeightedText, device: str) -> torch.Tensor:
        """A pooled embedding is one vector for the whole text, so rows cannot be scaled: emphasis
        moves it along what the weighted words add, pooled + (w - 1) * (pooled(text) - pooled(text
        without the words of weight w)), once per distinct weight."""
        whole = self.pooled_of(parsed.text, device)
        if whole is None:
            return pooled
        result = pooled.float()
        for weight in sorted({w for _, _, w in parsed.spans if w != 1.0}):
            rest = self.pooled_of(without_weight(parsed, weight), device)
            assert rest is not None
            result = result + (weight - 1.0) * (whole - rest).float().to(result.device)
        return result.to(pooled.dtype)


def _weigh(embeds: torch.Tensor, segment: Segment, parsed: WeightedText) -> torch.Tensor:
    weights = token_weights(segment.tokenizer, parsed, segment.rows)
    return apply_segment_weights(embeds, segment.first_row, weights, segment.features)


def _width(encoder: Any) -> int:
    return int(encoder.config.hidden_size)


@torch.no_grad()
def _clip_pooled(tokenizer: Any, encoder: Any, text: str, device: str, projected: bool) -> torch.Tensor:
    """CLIP's pooled output as the diffusers pipelines take it: padded to the tokenizer's length."""
    ids = tokenizer(
        text,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)
    output = encoder(ids, output_hidden_states=False)
    pooled: torch.Tensor = output.text_embeds if projected else output.pooler_output
    return pooled.to(encoder.dtype)


class StableDiffusionAdapter(FamilyAdapter):
    family = ModelFamily.STABLE_DIFFUSION

    def defaults(self) -> Defaults:
        return Defaults(50, 7.5)

    def segments(self) -> list[Segment]:
        return [Segment(self.pipeline.tokenizer, 0, self.pipeline.tokenizer.model_max_length, slice(None))]

    def encode(self, prompt: str, negative_prompt: str, device: str, images: int, cfg: bool) -> Encoding:
        embeds, negative = self.pipeline.encode_prompt(
            prompt=prompt,
            device=device,
            num_images_per_prompt=images,
            do_classifier_free_guidance=cfg,
            negative_prompt=negative_prompt,
        )
        return Encoding(embeds, negative, None, None)


class StableDiffusionXLAdapter(FamilyAdapter):
    family = ModelFamily.STABLE_DIFFUSION_XL

    def defaults(self) -> Defaults:
        return Defaults(50, 5.0)

    def segments(self) -> list[Segment]:
        # encode_prompt concatenates each encoder's hidden states along the features, CLIP-L first.
        pipeline, segments, start = self.pipeline, [], 0
        for tokenizer, encoder in (
            (pipeline.tokenizer, pipeline.text_encoder),
            (pipeline.tokenizer_2, pipeline.text_encoder_2),
        ):
            if encoder is None:
                continue
            segments.append(
                Segment(tokenizer, 0, tokenizer.model_max_length, slice(start, start + _width(encoder)))
            )
            start += _width(encoder)
        return segments

    def encode(self, prompt: str, negative_prompt: str, device: str, images: int, cfg: bool) -> Encoding:
        return Encoding(
            *self.pipeline.encode_prompt(
                prompt=prompt,
                prompt_2=None,
                device=device,
                num_images_per_prompt=images,
                do_classifier_free_guidance=cfg,
                negative_prompt=negative_prompt,
            )
        )

    def pooled_of(self, text: str, device: str) -> torch.Tensor | None:
        return _clip_pooled(
            self.pipeline.tokenizer_2, self.pipeline.text_encoder_2, text, device, projected=True
        )


class StableDiffusion3Adapter(FamilyAdapter):
    family = ModelFamily.STABLE_DIFFUSION_3

    def defaults(self) -> Defaults:
        return Defaults(28, 7.0)

    def segments(self) -> list[Segment]:
        # CLIP-L and CLIP-G side by side in the features of the first rows, T5's rows after them.
        pipeline = self.pipeline
        clip_rows = int(pipeline.tokenizer_max_length)
        first, second = _width(pipeline.text_encoder), _width(pipeline.text_encoder_2)
        segments = [
            Segment(pipeline.tokenizer, 0, clip_rows, slice(0, first)),
            Segment(pipeline.tokenizer_2, 0, clip_rows, slice(first, first + second)),
        ]
        if pipeline.text_encoder_3 is not None:
            segments.append(Segment(pipeline.tokenizer_3, clip_rows, SD3_T5_ROWS, slice(None)))
        return segments

    def encode(self, prompt: str, negative_prompt: str, device: str, images: int, cfg: bool) -> Encoding:
        return Encoding(
            *self.pipeline.encode_prompt(
                prompt=prompt,
                prompt_2=None,
                prompt_3=None,
                device=device,
                num_images_per_prompt=images,
                do_classifier_free_guidance=cfg,
                negative_prompt=negative_prompt,
                max_sequence_length=SD3_T5_ROWS,
            )
        )

    def pooled_of(self, text: str, device: str) -> torch.Tensor | None:
        pipeline = self.pipeline
        return torch.cat(
            [
                _clip_pooled(pipeline.tokenizer, pipeline.text_encoder, text, device, projected=True),
                _clip_pooled(pipeline.tokenizer_2, pipeline.text_encoder_2, text, device, projected=True),
            ],
            dim=-1,
        )


class StableDiffusion35Adapter(StableDiffusion3Adapter):
    family = ModelFamily.STABLE_DIFFUSION_35

    def defaults(self) -> Defaults:
        # Model cards: 3.5 Medium (MMDiT-X, with dual-attention layers) 40 steps at 4.5; Large 28 at 3.5.
        if self.pipeline.transformer.config.get("dual_attention_layers"):
            return Defaults(40, 4.5)
        return Defaults(28, 3.5)


class FluxAdapter(FamilyAdapter):
    family = ModelFamily.FLUX1_DEV

    def defaults(self) -> Defaults:
        return Defaults(50, 3.5)  # FLUX.1-dev's model card

    def segments(self) -> list[Segment]:
        return [Segment(self.pipeline.tokenizer_2, 0, FLUX_T5_ROWS, slice(None))]  # T5 fills the sequence

    def encode(self, prompt: str, negative_prompt: str, device: str, images: int, cfg: bool) -> Encoding:
        embeds, pooled, _text_ids = self.pipeline.encode_prompt(
            prompt=prompt,
            prompt_2=None,
            device=device,
            num_images_per_prompt=images,
            max_sequence_length=FLUX_T5_ROWS,
        )
        return Encoding(embeds, None, pooled, None)

    def pooled_of(self, text: str, device: str) -> torch.Tensor | None:
        return _clip_pooled(
            self.pipeline.tokenizer, self.pipeline.text_encoder, text, device, projected=False
        )


class FluxSchnellAdapter(FluxAdapter):
    family = ModelFamily.FLUX1_SCHNELL

    def defaults(self) -> Defaults:
        return Defaults(4, 0.0)  # FLUX.1-schnell's model card: timestep-distilled, no guidance


def _sd3_family(pipeline: Any) -> type[FamilyAdapter]:
    # SD3.5 added query-key normalisation to the MMDiT; SD3 medium has none.
    return StableDiffusion35Adapter if pipeline.transformer.config.get("qk_norm") else StableDiffusion3Adapter


def _flux_family(pipeline: Any) -> type[FamilyAdapter]:
    # FLUX.1-dev embeds its distilled guidance; schnell's transformer has no guidance embedding.
    return FluxAdapter if pipeline.transformer.config.get("guidance_embeds") else FluxSchnellAdapter


def _by_class() -> dict[type, Callable[[Any], type[FamilyAdapter]]]:
    import diffusers  # noqa: PLC0415 - heavy import, the pipeline is loaded by now

    return {
        diffusers.StableDiffusionPipeline: lambda _: StableDiffusionAdapter,
        diffusers.StableDiffusionXLPipeline: lambda _: StableDiffusionXLAdapter,
        diffusers.StableDiffusion3Pipeline: _sd3_family,
        diffusers.FluxPipeline: _flux_family,
    }


def adapter_for(pipeline: Any, declared: ModelFamily = ModelFamily.AUTO) -> FamilyAdapter:
    """The adapter of the loaded pipeline's family; a family named in the spec must be the one loaded."""
    chooser = next((choose for cls, choose in _by_class().items() if isinstance(pipeline, cls)), None)
    adapter = (chooser(pipeline) if chooser else FamilyAdapter)(pipeline)
    if declared is not ModelFamily.AUTO and adapter.family is not declared:
        facts = FAMILIES[declared]
        loaded = f"{adapter.title} ({type(pipeline).__name__})" if adapter.family else type(pipeline).__name__
        raise PermanentTaskError(
            f"model.family is {declared.value} ({facts.title}, a {facts.pipeline_class}) "
            f"but the model loads as {loaded}: fix model.family or model.id"
        )
    return adapter
