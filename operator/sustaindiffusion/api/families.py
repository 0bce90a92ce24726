"""Model families: what each family's inputs mean, stated once for the spec (validation) and the
worker (generation), without torch.

A family decides which search-space settings can change an image at all: FLUX.1 has no negative
prompt (FLUX.1-dev embeds a distilled guidance value instead of classifier-free guidance), and
FLUX.1-schnell ignores guidance altogether. The spec names the family (`model.family`), or it is
resolved from the model id when the id is a known hub checkpoint, or from `model.pipelineClass`
when every family of that class agrees; the worker checks the loaded pipeline against it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class ModelFamily(StrEnum):
    AUTO = "Auto"
    STABLE_DIFFUSION = "StableDiffusion"  # SD 1.x and 2.x
    STABLE_DIFFUSION_XL = "StableDiffusionXL"
    STABLE_DIFFUSION_3 = "StableDiffusion3"
    STABLE_DIFFUSION_35 = "StableDiffusion35"
    FLUX1_DEV = "Flux1Dev"
    FLUX1_SCHNELL = "Flux1Schnell"


class GuidanceKind(StrEnum):
    CLASSIFIER_FREE = "ClassifierFree"  # guidance_scale > 1 mixes in the negative prompt's prediction
    DISTILLED = "Distilled"  # a value the transformer embeds; one pass per step, no negative prompt
    NONE = "None"  # the model takes no guidance: the value is ignored


@dataclass(frozen=True)
class FamilyFacts:
    family: ModelFamily
    title: str
    pipeline_class: str  # the diffusers class the family loads as
    guidance: GuidanceKind
    hub_ids: tuple[str, ...]  # checkpoints known to be this family (the id resolves the family)

    @property
    def negative_prompt(self) -> bool:
        return self.guidance is GuidanceKind.CLASSIFIER_FREE


FAMILIES: dict[ModelFamily, FamilyFacts] = {
    facts.family: facts
    for facts in (
        FamilyFacts(
            ModelFamily.STABLE_DIFFUSION,
            "Stable Diffusion 1.x/2.x",
            "StableDiffusionPipeline",
            GuidanceKind.CLASSIFIER_FREE,
            (
                "stable-diffusion-v1-5/stable-diffusion-v1-5",
                "runwayml/stable-diffusion-v1-5",
                "CompVis/stable-diffusion-v1-4",
                "stabilityai/stable-diffusion-2-1",
                "stabilityai/stable-diffusion-2-1-base",
            ),
        ),
        FamilyFacts(
            ModelFamily.STABLE_DIFFUSION_XL,
            "Stable Diffusion XL",
            "StableDiffusionXLPipeline",
            GuidanceKind.CLASSIFIER_FREE,
            ("stabilityai/stable-diffusion-xl-base-1.0",),
        ),
        FamilyFacts(
            ModelFamily.STABLE_DIFFUSION_3,
            "Stable Diffusion 3",
            "StableDiffusion3Pipeline",
            GuidanceKind.CLASSIFIER_FREE,
            ("stabilityai/stable-diffusion-3-medium-diffusers",),
        ),
        FamilyFacts(
            ModelFamily.STABLE_DIFFUSION_35,
            "Stable Diffusion 3.5",
            "StableDiffusion3Pipeline",
            GuidanceKind.CLASSIFIER_FREE,
            ("stabilityai/stable-diffusion-3.5-large", "stabilityai/stable-diffusion-3.5-medium"),
        ),
        FamilyFacts(
            ModelFamily.FLUX1_DEV,
            "FLUX.1-dev",
            "FluxPipeline",
            GuidanceKind.DISTILLED,
            ("black-forest-labs/FLUX.1-dev",),
        ),
        FamilyFacts(
            ModelFamily.FLUX1_SCHNELL,
            "FLUX.1-schnell",
            "FluxPipeline",
            GuidanceKind.NONE,
            ("black-forest-labs/FLUX.1-schnell",),
        ),
    )
}


def possible_families(family: ModelFamily, model_id: str, pipeline_class: str) -> list[FamilyFacts]:
    """The families a model may be, from what the spec says: the family if named, else the family
    of a known hub id, else the families of a named pipeline class, else all of them."""
    if family is not ModelFamily.AUTO:
        return [FAMILIES[family]]
    by_id = [facts for facts in FAMILIES.values() if model_id in facts.hub_ids]
    if by_id:
        return by_id
    by_class = [facts for facts in FAMILIES.values() if facts.pipeline_class == pipeline_class]
    return by_class or list(FAMILIES.values())


def _cel_list(values: list[str]) -> str:
    return "[" + ", ".join(f"'{value}'" for value in values) + "]"


def families_cel(model: str, chosen: set[ModelFamily]) -> str:
    """CEL that is true when every family `possible_families` allows for `model` (a CEL path to a
    ModelSpec with its defaults applied) is in `chosen`: the same decision, on the API server."""
    chosen_facts = [FAMILIES[family] for family in FAMILIES if family in chosen]
    named = _cel_list([facts.family.value for facts in chosen_facts])
    chosen_ids = [hub_id for facts in chosen_facts for hub_id in facts.hub_ids]
    known_ids = [hub_id for facts in FAMILIES.values() for hub_id in facts.hub_ids]
    classes = sorted(
        {
            facts.pipeline_class
            for facts in chosen_facts
            if all(
                other.family in chosen
                for other in FAMILIES.values()
                if other.pipeline_class == facts.pipeline_class
            )
        }
    )
    by_class = f"(!({model}.id in {_cel_list(known_ids)}) && {model}.pipelineClass in {_cel_list(classes)})"
    by_id = f"{model}.id in {_cel_list(chosen_ids)}"
    return f"({model}.family in {named} || ({model}.family == 'Auto' && ({by_id} || {by_class})))"


WITHOUT_NEGATIVE_PROMPT = {facts.family for facts in FAMILIES.values() if not facts.negative_prompt}
WITHOUT_GUIDANCE = {facts.family for facts in FAMILIES.values() if facts.guidance is GuidanceKind.NONE}


def lacks(families: list[FamilyFacts], chosen: set[ModelFamily]) -> bool:
    return all(facts.family in chosen for facts in families)


def titles(chosen: set[ModelFamily]) -> str:
    return " and ".join(FAMILIES[family].title for family in FAMILIES if family in chosen)
