"""The SustainSearch spec: what a user writes in `search.yaml`.

These pydantic models are the one source of truth: `crds/sustainsearch.yaml` is generated from
them (`make crds`), and local mode validates with them. Every cross-field rule is a `Rule`
(CEL for the API server, a Python check for local mode, one message).
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from sustaindiffusion.api.families import (
    WITHOUT_GUIDANCE,
    WITHOUT_NEGATIVE_PROMPT,
    FamilyFacts,
    ModelFamily,
    families_cel,
    lacks,
    possible_families,
    titles,
)
from sustaindiffusion.api.keywords import DEFAULT_NEGATIVE_POOL, DEFAULT_POSITIVE_POOL
from sustaindiffusion.api.objectives import OBJECTIVES, Direction, ObjectiveName
from sustaindiffusion.api.prompts_overlap import (
    OVERLAP_MESSAGE,
    PROMPT_MAX_LENGTH,
    first_overlap,
    overlap_message,
    overlap_rule_cel,
)
from sustaindiffusion.api.quantities import (
    MAGNITUDE_RULE,
    NON_NEGATIVE_RULE,
    QUANTITY_RULE,
    RESOURCE_RULES,
    VALUE_RULES,
)
from sustaindiffusion.api.rules import RULE_ERROR_TYPE, ApiModel, Rule, immutable

# ----------------------------------------------------------------------------- shared types

DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
LABEL_VALUE = r"^[a-z0-9A-Z]([-a-z0-9A-Z_.]*[a-z0-9A-Z])?$"
ResourceName = Annotated[str, Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)]
ShortText = Annotated[str, Field(min_length=1, max_length=256)]
Keyword = Annotated[str, Field(min_length=1, max_length=100)]
Quantity = Annotated[
    int | str,
    AfterValidator(QUANTITY_RULE.validate),  # the syntax first: the others parse the value
    AfterValidator(NON_NEGATIVE_RULE.validate),
    AfterValidator(MAGNITUDE_RULE.validate),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "maxLength": 64,  # bounds the CEL cost estimate; applies to the string form only
            "x-kubernetes-validations": [rule.as_validation() for rule in VALUE_RULES],
        }
    ),
]
MAX_SEED = 2**31 - 1
VALIDATION_PROMPTS_LIMIT = 56  # what one candidate's per-prompt rows fit in a 4 KiB worker report
DEFAULT_WORKER_IMAGE = "sustaindiffusion/worker:0.1.0"


# ----------------------------------------------------------------------------- model


class PipelineDtype(StrEnum):
    AUTO = "Auto"
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"


class SecretKeyRef(ApiModel):
    """A key in a Secret of the search's namespace."""

    name: ResourceName = Field(description="Name of the Secret.")
    key: Annotated[str, Field(min_length=1, max_length=253)] = Field(
        default="token", description="Key in the Secret."
    )


class ConfigMapKeyRef(ApiModel):
    """A key in a ConfigMap of the search's namespace."""

    name: ResourceName = Field(description="Name of the ConfigMap.")
    key: Annotated[str, Field(min_length=1, max_length=253)] = Field(
        default="prompts.txt", description="Key in the ConfigMap."
    )


class WeightsCache(ApiModel):
    """A PersistentVolumeClaim that holds model weights, so pods do not download them each time."""

    claim_name: ResourceName = Field(description="Name of the PersistentVolumeClaim.")
    mount_path: Annotated[str, Field(min_length=2, max_length=512, pattern=r"^/")] = Field(
        default="/models", description="Where the claim is mounted in worker pods (HF_HOME points here)."
    )
    read_only: bool = Field(default=False, description="Mount the claim read-only.")


class ModelSpec(ApiModel):
    """The text-to-image model under search."""

    id: Annotated[str, Field(min_length=1, max_length=512)] = Field(
        default="stabilityai/stable-diffusion-3-medium-diffusers",
        description="Hub id (org/name) or a local path inside the worker container.",
    )
    revision: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        default=None, description="Hub revision (branch, tag or commit); ignored for local paths."
    )
    pipeline_class: Annotated[str, Field(max_length=128, pattern=r"^(Auto|[A-Z][A-Za-z0-9]*Pipeline)$")] = (
        Field(
            default="Auto",
            description="diffusers pipeline class, e.g. StableDiffusion3Pipeline; Auto: from the model.",
        )
    )
    family: ModelFamily = Field(
        default=ModelFamily.AUTO,
        description="Model family (what negative prompt and guidance mean, default steps and guidance); "
        "Auto: from a known hub id or the pipeline class, else from the loaded model.",
    )
    dtype: PipelineDtype = Field(
        default=PipelineDtype.AUTO,
        description="Weights dtype; Auto picks bfloat16 on GPUs that support it and float32 on CPUs.",
    )
    width: int = Field(default=512, ge=64, le=4096, description="Image width in pixels (multiple of 8).")
    height: int = Field(default=512, ge=64, le=4096, description="Image height in pixels (multiple of 8).")
    token_secret_ref: SecretKeyRef | None = Field(
        default=None, description="Secret key holding a hub token, for gated models."
    )
    cache: WeightsCache | None = Field(default=None, description="Weights cache volume.")

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="self.width % 8 == 0 && self.height % 8 == 0",
            message="width and height must be multiples of 8",
            check=lambda m: m.width % 8 == 0 and m.height % 8 == 0,
        ),
    )

    def possible_families(self) -> list[FamilyFacts]:
        return possible_families(self.family, self.id, self.pipeline_class)


# ----------------------------------------------------------------------------- prompts


class SeedMode(StrEnum):
    SAME_FOR_ALL_CANDIDATES = "SameForAllCandidates"
    PER_CANDIDATE = "PerCandidate"


class SeedPolicy(ApiModel):
    """How image seeds are chosen. Equal seeds compare candidates on equal noise."""

    base: int = Field(default=0, ge=0, le=MAX_SEED, description="Seed of the first image.")
    mode: SeedMode = Field(
        default=SeedMode.SAME_FOR_ALL_CANDIDATES,
        description="SameForAllCandidates: image i of prompt p gets the same seed for every candidate. "
        "PerCandidate: seeds also depend on the candidate id.",
    )


_PROMPTS_RULE = Rule(
    cel="(has(self.inline) && size(self.inline) > 0) || has(self.configMapRef)",
    message="give prompts inline or by configMapRef",
    check=lambda p: bool(p.inline) or p.config_map_ref is not None,
)
# At most PROMPT_MAX_LENGTH characters where a spec is written (the schema's maxLength, which the
# held-out rule's CEL cost needs); a stored spec from before, with up to 2000, still reads.
PROMPT_LENGTH_RULE = Rule(
    cel=f"size(self) <= {PROMPT_MAX_LENGTH}",
    message=f"Too long: may not be more than {PROMPT_MAX_LENGTH} bytes",  # the API server's words
    check=lambda prompt: len(prompt) <= PROMPT_MAX_LENGTH,
    admission=True,
)
PromptText = Annotated[
    str,
    Field(min_length=1, max_length=2000),
    AfterValidator(PROMPT_LENGTH_RULE.validate),
    WithJsonSchema({"type": "string", "minLength": 1, "maxLength": PROMPT_MAX_LENGTH}),
]


class PromptsSpec(ApiModel):
    """Prompts to generate images for; large sets belong in a ConfigMap, not in the spec."""

    inline: Annotated[list[PromptText], Field(max_length=200)] | None = Field(
        default=None, description="Prompts written in the spec."
    )
    config_map_ref: ConfigMapKeyRef | None = Field(
        default=None, description="A ConfigMap key with one prompt per line (blank lines are skipped)."
    )
    images_per_prompt: int = Field(default=20, ge=1, le=1000, description="Images generated per prompt.")
    seeds: SeedPolicy = Field(default_factory=SeedPolicy, description="Seed policy.")

    rules: ClassVar[tuple[Rule, ...]] = (_PROMPTS_RULE,)


class PromptSource(ApiModel):
    """Prompts inline or from a ConfigMap key (one per line)."""

    inline: Annotated[list[PromptText], Field(max_length=VALIDATION_PROMPTS_LIMIT)] | None = Field(
        default=None, description="Prompts written in the spec."
    )
    config_map_ref: ConfigMapKeyRef | None = Field(
        default=None, description="A ConfigMap key with one prompt per line (blank lines are skipped)."
    )

    rules: ClassVar[tuple[Rule, ...]] = (_PROMPTS_RULE,)


# ----------------------------------------------------------------------------- search space


def _range_rules(kind: str) -> tuple[Rule, ...]:
    return (
        Rule(
            cel="has(self.fixed) != (has(self.min) || has(self.max))",
            message=f"set either fixed or min and max for this {kind}, not both",
            check=lambda r: (r.fixed is not None) != (r.min is not None or r.max is not None),
        ),
        Rule(
            cel="has(self.fixed) || (has(self.min) && has(self.max))",
            message="min and max must be given together",
            check=lambda r: r.fixed is not None or (r.min is not None and r.max is not None),
        ),
        Rule(
            cel="!has(self.min) || !has(self.max) || self.min <= self.max",
            message="min must not exceed max",
            check=lambda r: r.min is None or r.max is None or r.min <= r.max,
        ),
    )


class _Range(ApiModel):
    """A variable searched between min and max, or fixed (subclasses declare the bounded fields)."""

    fixed: Any = None
    rules: ClassVar[tuple[Rule, ...]] = _range_rules("integer range")

    @property
    def searched(self) -> bool:
        return self.fixed is None


class StepsRange(_Range):
    """Denoising steps: searched between min and max, or fixed."""

    min: int | None = Field(default=None, ge=1, le=500, description="Fewest steps searched.")
    max: int | None = Field(default=None, ge=1, le=500, description="Most steps searched.")
    fixed: int | None = Field(default=None, ge=1, le=500, description="Use this many steps; do not search.")


class WeightRange(_Range):
    """Prompt weight: each selected keyword gets `weight` emphasis marks (x1.1 each)."""

    min: int | None = Field(default=None, ge=0, le=10, description="Lowest weight searched.")
    max: int | None = Field(default=None, ge=0, le=10, description="Highest weight searched.")
    fixed: int | None = Field(default=None, ge=0, le=10, description="Use this weight; do not search.")


class GuidanceRange(_Range):
    """Classifier-free guidance scale: searched on a grid from min to max by step, or fixed."""

    min: float | None = Field(default=None, ge=0.0, le=50.0, description="Lowest guidance scale searched.")
    max: float | None = Field(default=None, ge=0.0, le=50.0, description="Highest guidance scale searched.")
    step: float = Field(default=0.1, gt=0.0, le=50.0, description="Grid step between searched values.")
    fixed: float | None = Field(default=None, ge=0.0, le=50.0, description="Use this scale; do not search.")

    rules: ClassVar[tuple[Rule, ...]] = (
        *_range_rules("guidance range"),
        Rule(
            cel="!has(self.min) || !has(self.max) || self.min == self.max "
            "|| self.step <= self.max - self.min",
            message="step must not exceed max - min",
            check=lambda r: r.min is None or r.max is None or r.min == r.max or r.step <= r.max - r.min,
        ),
    )


def _unique_keywords(keywords: list[str]) -> list[str]:
    seen: set[str] = set()
    for keyword in keywords:
        if keyword in seen:
            # The API server says the same for a duplicate in a list of type set.
            raise PydanticCustomError(
                RULE_ERROR_TYPE, "{message}", {"message": f'Duplicate value: "{keyword}"'}
            )
        seen.add(keyword)
    return keywords


KeywordList = Annotated[
    list[Keyword],
    Field(max_length=64, json_schema_extra={"x-kubernetes-list-type": "set"}),
    AfterValidator(_unique_keywords),
]


class KeywordSet(ApiModel):
    """Keywords: a pool searched as one on/off bit per keyword, or a fixed list used as is."""

    pool: KeywordList | None = Field(
        default=None, description="Keywords the search may select, each independently."
    )
    fixed: KeywordList | None = Field(
        default=None, description="Keywords always used, not searched (empty: none)."
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="has(self.pool) != has(self.fixed)",
            message="set exactly one of pool or fixed",
            check=lambda k: (k.pool is not None) != (k.fixed is not None),
        ),
        Rule(
            cel="!has(self.pool) || size(self.pool) > 0",
            message="pool must not be empty; use fixed: [] for no keywords",
            check=lambda k: k.pool is None or len(k.pool) > 0,
        ),
    )

    @property
    def searched(self) -> bool:
        return self.pool is not None


class SearchSpace(ApiModel):
    """The inference-time settings searched. Defaults follow the SustainDiffusion method."""

    inference_steps: StepsRange = Field(
        default_factory=lambda: StepsRange(min=25, max=80), description="Denoising steps."
    )
    guidance_scale: GuidanceRange = Field(
        default_factory=lambda: GuidanceRange(min=0.0, max=20.0, step=0.1), description="Guidance scale."
    )
    positive_keywords: KeywordSet = Field(
        default_factory=lambda: KeywordSet(pool=list(DEFAULT_POSITIVE_POOL)),
        description="Keywords appended to the prompt, comma separated.",
    )
    negative_keywords: KeywordSet = Field(
        default_factory=lambda: KeywordSet(pool=list(DEFAULT_NEGATIVE_POOL)),
        description="Keywords that form the negative prompt.",
    )
    prompt_weight: WeightRange = Field(
        default_factory=lambda: WeightRange(min=0, max=5), description="Emphasis weight of selected keywords."
    )


# ----------------------------------------------------------------------------- objectives


class Objective(ApiModel):
    """One objective. Energy is CPU+GPU joules per image; Time is seconds per image."""

    name: ObjectiveName = Field(description="What is optimised.")
    direction: Direction | None = Field(
        default=None, description="Minimize or Maximize; absent: Maximize for Quality, Minimize otherwise."
    )

    @property
    def effective_direction(self) -> Direction:
        return self.direction or OBJECTIVES[self.name].direction


class QualityConstraint(ApiModel):
    """Quality must stay at least (1 - tolerance) of the default settings' quality."""

    enabled: bool = Field(default=True, description="Apply the constraint.")
    tolerance: float = Field(default=0.05, ge=0.0, le=1.0, description="Allowed relative loss of quality.")


class ValidImagesConstraint(ApiModel):
    """Enough evidence for the biases: at least `minShare` of a candidate's images must be judged
    human with gender and ethnicity answers that map to a group (a candidate cannot look fair by
    producing no people)."""

    enabled: bool = Field(default=True, description="Apply the constraint.")
    min_share: float = Field(
        default=0.8, ge=0.0, le=1.0, description="Least share of images that count for both biases."
    )


class Constraints(ApiModel):
    """Constraints every result must meet."""

    quality: QualityConstraint = Field(default_factory=QualityConstraint, description="Quality constraint.")
    valid_images: ValidImagesConstraint = Field(
        default_factory=ValidImagesConstraint, description="Valid-image constraint."
    )
    same_device: bool = Field(
        default=True,
        description="Energy and time compare only results measured on the GPU model the defaults ran on: "
        "results from another model are infeasible. Set false to mix devices.",
    )


# ----------------------------------------------------------------------------- scoring


class ModelRef(ApiModel):
    """A model loaded with from_pretrained: hub id or local path, optional revision."""

    id: Annotated[str, Field(min_length=1, max_length=512)] = Field(description="Hub id or local path.")
    revision: Annotated[str, Field(min_length=1, max_length=256)] | None = Field(
        default=None, description="Hub revision."
    )


class QualityScorer(StrEnum):
    CLIP_SCORE = "ClipScore"
    DETECTOR_CONFIDENCE = "DetectorConfidence"


class QualityScoring(ApiModel):
    """How image quality is scored."""

    scorer: QualityScorer = Field(
        default=QualityScorer.CLIP_SCORE,
        description="ClipScore (prompt-image agreement) or DetectorConfidence (the method's detector score).",
    )
    model: ModelRef | None = Field(default=None, description="Scorer model; absent: the scorer's default.")


class HumanFilter(ApiModel):
    """Regenerate images that the detector (`scoring.detector`) says show no human."""

    enabled: bool = Field(default=True, description="Apply the human filter.")
    max_retries: int = Field(
        default=3,
        ge=0,
        le=20,
        description="Regenerations per image, then the image is recorded as non-human.",
    )


class DetectorFamily(StrEnum):
    """A family of models that answers the person, gender and ethnicity questions."""

    VQA = "Vqa"  # a visual-question-answering model (scoring.vqaModel) asked the questions
    CLIP = "Clip"  # a CLIP model (scoring.clipModel) choosing between text prompts, zero-shot


DEFAULT_CLIP_DETECTOR = "openai/clip-vit-base-patch32"


class CrossCheck(ApiModel):
    """A second detector family that scores every image beside the detector; per candidate, how
    often the two agree is recorded (the person gate over all images, gender and ethnicity over the
    images both call a person), and a candidate on which they disagree more than `maxDisagreement`
    is a warning in the report and the DetectorsDisagree condition. Its answers never count for the
    biases."""

    family: DetectorFamily = Field(description="The family that checks the detector: not the detector's own.")
    max_disagreement: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description="Largest share of disagreement (on the person gate, gender or ethnicity) that is "
        "not a warning.",
    )


_DETECTOR_CEL = f"(has(self.detector) ? self.detector : '{DetectorFamily.VQA.value}')"


class ScoringSpec(ApiModel):
    """Bias and quality scoring."""

    vqa_model: ModelRef = Field(
        default_factory=lambda: ModelRef(id="Salesforce/blip-vqa-base"),
        description="Visual-question-answering model of the Vqa detector family.",
    )
    detector: DetectorFamily | None = Field(
        default=None,
        description="The detector family whose answers drive the human filter and count for the biases: "
        "Vqa (scoring.vqaModel) or Clip (scoring.clipModel, zero-shot); absent: Vqa.",
    )
    clip_model: ModelRef | None = Field(
        default=None,
        description=f"CLIP model of the Clip detector family; absent: {DEFAULT_CLIP_DETECTOR}.",
    )
    cross_check: CrossCheck | None = Field(
        default=None, description="A second detector family that checks the detector; absent: none."
    )
    quality: QualityScoring = Field(default_factory=QualityScoring, description="Quality scoring.")
    human_filter: HumanFilter = Field(default_factory=HumanFilter, description="Human filter.")

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel=f"!has(self.crossCheck) || self.crossCheck.family != {_DETECTOR_CEL}",
            message="crossCheck.family must differ from the detector's family (scoring.detector, "
            "absent: Vqa): a family cannot check itself",
            check=lambda s: s.cross_check is None or s.cross_check.family is not s.detector_family,
            field_path=".crossCheck.family",
        ),
    )

    @property
    def detector_family(self) -> DetectorFamily:
        return self.detector or DetectorFamily.VQA

    def family_model(self, family: DetectorFamily) -> ModelRef:
        """The model a detector family loads."""
        if family is DetectorFamily.VQA:
            return self.vqa_model
        return self.clip_model or ModelRef(id=DEFAULT_CLIP_DETECTOR)


# ----------------------------------------------------------------------------- algorithm


class HypervolumeStagnation(ApiModel):
    """Stop when hypervolume improved by less than `tolerance` (relative) over `generations`."""

    generations: int = Field(default=5, ge=1, le=1000, description="Window in generations.")
    tolerance: float = Field(default=0.001, ge=0.0, le=1.0, description="Relative improvement threshold.")


class Termination(ApiModel):
    """Extra stopping rules; the search also stops after `generations`."""

    max_evaluations: int | None = Field(default=None, ge=1, le=10_000_000, description="Evaluation budget.")
    energy_budget_joules: float | None = Field(
        default=None, gt=0.0, description="Energy budget over all evaluations, CPU+GPU joules."
    )
    hypervolume_stagnation: HypervolumeStagnation | None = Field(
        default=None, description="Stop when the hypervolume stagnates."
    )


class Screening(ApiModel):
    """Multi-fidelity screening: each new search candidate first gets `imagesPerPrompt` images per
    prompt; only those whose optimistic bounds (at `confidence`) could still place them in the next
    population get the rest of `prompts.imagesPerPrompt`. The others are recorded as screened out,
    with their partial estimates."""

    images_per_prompt: int = Field(ge=1, le=999, description="Images per prompt of the first pass.")
    confidence: float = Field(
        default=0.8,  # benchmarks/search_energy.py: 0.95 saves a third as much, for no measurable gain
        ge=0.5,
        le=0.999,
        description="One-sided level of the optimistic bounds that decide who gets the rest.",
    )


class Evidence(ApiModel):
    """More evidence for the front: from the second generation on, up to `points` front points
    with fewer than `maxImagesPerPrompt` images per prompt get `imagesPerPrompt` more, on fresh
    seeds, before the generation's survival, so the front sharpens instead of keeping its first
    lucky draws."""

    images_per_prompt: int = Field(ge=1, le=100, description="Images per prompt added per generation.")
    max_images_per_prompt: int = Field(
        ge=2, le=1000, description="No point gets more images per prompt than this in all."
    )
    points: int = Field(default=5, ge=1, le=100, description="Front points given more per generation.")


class StopRule(StrEnum):
    """When the adaptive policy stops a candidate short of a whole evaluation: once it is out of
    the next population even at its best plausible values (`population`), or once it is off the
    front, its best plausible values dominated by a front point's estimate (`front`)."""

    POPULATION = "population"
    FRONT = "front"


class Adaptive(ApiModel):
    """Adaptive evidence: each generation's candidates get their images in sequential batches of
    `imagesPerPrompt` (a candidate proposed again after it was stopped continues with fresh ones).
    A candidate stops once the decisions it feeds are settled: it is out of the next population
    (with `stopWhen: front`, off the front) even at its best plausible values (calibrated bounds,
    each decision at `error`, split over its objectives, constraints and looks), or it has its
    `prompts.imagesPerPrompt`; a point of the front gets more, up to `maxImagesPerPrompt`, until
    each of its values is known to `precision`.
    Every image of such a search, the baselines' too, is generated in calls of `imagesPerPrompt`,
    so every part of a candidate costs what it would cost in a whole evaluation."""

    images_per_prompt: int = Field(
        default=5, ge=1, le=1000, description="Images per prompt of each batch (and of each generate call)."
    )
    max_images_per_prompt: int = Field(
        default=40, ge=1, le=1000, description="No front point gets more images per prompt than this in all."
    )
    error: float = Field(
        default=0.05,
        gt=0.0,
        le=0.5,
        description="Probability that a stopped candidate would have entered the next population (the "
        "front, with stopWhen: front) on its full evaluation, per decision (split over its bounds and its "
        "looks).",
    )
    precision: float = Field(
        default=0.3,
        gt=0.0,
        le=1.0,
        description="Width of each objective's 90% interval (on the hypervolume's 0 to 1 scale) at which "
        "a front point needs no more images.",
    )
    energy_noise: float = Field(
        default=0.03,
        ge=0.0,
        le=1.0,
        description="Relative noise of the energy of one generate call (meter and run to run).",
    )
    stop_when: StopRule = Field(
        default=StopRule.POPULATION,
        description="Stop a candidate short of a whole evaluation once it is out of the next population "
        "(population) or off the front (front) even at its best plausible values.",
    )


class AlgorithmSpec(ApiModel):
    """NSGA-II settings."""

    population_size: int = Field(default=20, ge=4, le=1024, description="Candidates per generation.")
    generations: int = Field(
        default=10, ge=1, le=10_000, description="Generations after the baseline; may change while running."
    )
    crossover_probability: float = Field(default=0.9, ge=0.0, le=1.0, description="Crossover probability.")
    mutation_probability: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Per-variable mutation probability; absent: 1/number of variables.",
    )
    seed: int = Field(
        default=0, ge=0, le=MAX_SEED, description="Seed of the search; same seed, same candidates."
    )
    termination: Termination = Field(default_factory=Termination, description="Extra stopping rules.")
    screening: Screening | None = Field(
        default=None, description="Screen new candidates on part of the images first; absent: off."
    )
    evidence: Evidence | None = Field(
        default=None, description="Give front points more images as the search goes; absent: off."
    )
    adaptive: Adaptive | None = Field(
        default=None,
        description="Spend images where a decision needs them (sequential batches); absent: every "
        "candidate gets prompts.imagesPerPrompt.",
    )


# ----------------------------------------------------------------------------- execution


class ResourceRequirements(ApiModel):
    """Worker container resources, as in a Kubernetes container spec."""

    requests: Annotated[dict[str, Quantity], Field(max_length=16)] | None = Field(
        default=None, description="Resource requests."
    )
    limits: Annotated[dict[str, Quantity], Field(max_length=16)] | None = Field(
        default=None, description="Resource limits."
    )

    # What Kubernetes refuses in a container's resources, refused before any Job is made.
    rules: ClassVar[tuple[Rule, ...]] = RESOURCE_RULES


class Toleration(ApiModel):
    """A pod toleration, as in a Kubernetes pod spec."""

    key: Annotated[str, Field(max_length=316)] | None = Field(default=None, description="Taint key.")
    operator: Annotated[str, Field(pattern=r"^(Exists|Equal)$")] | None = Field(
        default=None, description="Exists or Equal."
    )
    value: Annotated[str, Field(max_length=63)] | None = Field(default=None, description="Taint value.")
    effect: Annotated[str, Field(pattern=r"^(NoSchedule|PreferNoSchedule|NoExecute)$")] | None = Field(
        default=None, description="Taint effect."
    )
    toleration_seconds: int | None = Field(default=None, description="For NoExecute: how long to stay.")


class Artifacts(ApiModel):
    """Where worker pods write per-image records and images."""

    claim_name: ResourceName = Field(description="PersistentVolumeClaim for artifacts.")
    path: Annotated[str, Field(min_length=2, max_length=512, pattern=r"^/")] = Field(
        default="/artifacts", description="Mount path in worker pods."
    )
    save_images: bool = Field(default=True, description="Save the generated images, not only records.")


class ExecutionSpec(ApiModel):
    """How and where worker pods run."""

    image: Annotated[str, Field(min_length=1, max_length=512)] = Field(
        default=DEFAULT_WORKER_IMAGE,
        description="Worker container image; the default stands for the image the operator's install names.",
    )
    image_pull_policy: Annotated[str, Field(pattern=r"^(Always|IfNotPresent|Never)$")] = Field(
        default="IfNotPresent", description="Image pull policy."
    )
    parallelism: int = Field(default=1, ge=1, le=1024, description="Worker pods running at once; may change.")
    candidates_per_pod: int = Field(
        default=2, ge=1, le=16, description="Candidates one pod evaluates (one model load serves them all)."
    )
    resources: ResourceRequirements = Field(
        default_factory=lambda: ResourceRequirements(limits={"nvidia.com/gpu": 1}),
        description="Worker container resources.",
    )
    node_selector: Annotated[dict[str, Annotated[str, Field(max_length=63)]], Field(max_length=32)] | None = (
        Field(default=None, description="Node labels worker pods require.")
    )
    tolerations: Annotated[list[Toleration], Field(max_length=32)] | None = Field(
        default=None, description="Tolerations of worker pods."
    )
    affinity: dict[str, Any] | None = Field(
        default=None,
        description="Pod affinity, as in a Kubernetes pod spec (validated when worker Jobs are created).",
        json_schema_extra={"type": "object", "x-kubernetes-preserve-unknown-fields": True},
    )
    priority_class_name: ResourceName | None = Field(
        default=None, description="PriorityClass of worker pods."
    )
    scheduler_name: ResourceName | None = Field(default=None, description="Scheduler of worker pods.")
    queue_name: Annotated[str, Field(max_length=63)] | None = Field(
        default=None, description="Kueue LocalQueue (label kueue.x-k8s.io/queue-name on worker Jobs)."
    )
    workload_priority_class: Annotated[str, Field(max_length=63)] | None = Field(
        default=None, description="Kueue WorkloadPriorityClass (label kueue.x-k8s.io/priority-class)."
    )
    pod_deadline_seconds: int = Field(
        default=3600, ge=60, le=604_800, description="Deadline of one worker pod (activeDeadlineSeconds)."
    )
    retries_per_candidate: int = Field(
        default=1, ge=0, le=10, description="Retries of a failed shard of candidates (backoffLimitPerIndex)."
    )
    max_failed_candidates: int = Field(
        default=10, ge=0, le=100_000, description="The search fails when more candidates than this fail."
    )
    artifacts: Artifacts | None = Field(default=None, description="Artifacts volume; absent: none.")

    rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="!has(self.queueName) || self.queueName.matches('" + LABEL_VALUE + "')",
            message="queueName must be a valid label value: letters, digits, '-', '_', '.', "
            "starting and ending with a letter or digit",
            check=lambda e: e.queue_name is None or re.match(LABEL_VALUE, e.queue_name) is not None,
        ),
        Rule(
            cel="!has(self.workloadPriorityClass) || self.workloadPriorityClass.matches('"
            + LABEL_VALUE
            + "')",
            message="workloadPriorityClass must be a valid label value",
            check=lambda e: (
                e.workload_priority_class is None
                or re.match(LABEL_VALUE, e.workload_priority_class) is not None
            ),
        ),
    )


# ----------------------------------------------------------------------------- baselines


class Configuration(ApiModel):
    """A concrete configuration evaluated beside the search (the model's defaults always are)."""

    name: Annotated[str, Field(min_length=1, max_length=63, pattern=LABEL_VALUE)] = Field(
        description="Name shown in reports."
    )
    inference_steps: int | None = Field(
        default=None, ge=1, le=500, description="Steps; absent: pipeline default."
    )
    guidance_scale: float | None = Field(
        default=None, ge=0.0, le=50.0, description="Guidance; absent: pipeline default."
    )
    positive_keywords: KeywordList = Field(
        default_factory=list, description="Keywords appended to the prompt."
    )
    negative_keywords: KeywordList = Field(default_factory=list, description="Negative prompt keywords.")
    prompt_weight: int = Field(default=0, ge=0, le=10, description="Emphasis weight of the keywords.")


class Reporting(ApiModel):
    """What the status shows."""

    max_front_entries: int = Field(
        default=50, ge=1, le=500, description="Pareto-front entries kept in .status (the archive has all)."
    )


# ----------------------------------------------------------------------------- validation


class ValidationSpec(ApiModel):
    """Held-out validation: when the search ends, the model's defaults and `points` front points
    (the knee and the extremes first, then spread over the front) are evaluated again on prompts
    the search never saw, with fresh seeds, and `.status.validation` shows what holds up."""

    prompts: PromptSource = Field(
        description="Held-out prompts, none of them a search prompt (ignoring ASCII case, runs of "
        "whitespace and final punctuation), e.g. examples/prompts/held-out.txt: the method's 56 prompts "
        "less its search prompt."
    )
    images_per_prompt: int = Field(default=10, ge=1, le=100, description="Images per prompt and point.")
    seed: int = Field(
        default=1,
        ge=0,
        le=MAX_SEED,
        description="Seed of the held-out images (drawn apart from the search's seeds either way).",
    )
    points: int = Field(default=5, ge=1, le=20, description="Front points validated beside the defaults.")


# ----------------------------------------------------------------------------- family rules


def _no_negative_keywords(spec: Any) -> bool:
    negative = spec.search_space.negative_keywords
    return negative.pool is None and not negative.fixed


_NO_NEGATIVE = families_cel("self.model", WITHOUT_NEGATIVE_PROMPT)
_NO_GUIDANCE = families_cel("self.model", WITHOUT_GUIDANCE)
# Settings a family cannot use would waste every evaluation that varies them: refused up front.
FAMILY_RULES = (
    Rule(
        cel=f"!{_NO_NEGATIVE} || (!has(self.searchSpace.negativeKeywords.pool) && "
        "(!has(self.searchSpace.negativeKeywords.fixed) "
        "|| size(self.searchSpace.negativeKeywords.fixed) == 0))",
        message=f"{titles(WITHOUT_NEGATIVE_PROMPT)} have no negative prompt (no classifier-free guidance): "
        "set negativeKeywords to fixed: []",
        check=lambda s: (
            not lacks(s.model.possible_families(), WITHOUT_NEGATIVE_PROMPT) or _no_negative_keywords(s)
        ),
        field_path=".searchSpace.negativeKeywords",
    ),
    Rule(
        cel=f"!{_NO_NEGATIVE} || !has(self.baselines) || "
        "self.baselines.all(b, !has(b.negativeKeywords) || size(b.negativeKeywords) == 0)",
        message=f"{titles(WITHOUT_NEGATIVE_PROMPT)} have no negative prompt: "
        "baselines must not set negativeKeywords",
        check=lambda s: (
            not lacks(s.model.possible_families(), WITHOUT_NEGATIVE_PROMPT)
            or not any(b.negative_keywords for b in s.baselines or [])
        ),
        field_path=".baselines",
    ),
    Rule(
        cel=f"!{_NO_GUIDANCE} || has(self.searchSpace.guidanceScale.fixed)",
        message=f"{titles(WITHOUT_GUIDANCE)} takes no guidance (the value is ignored): "
        "set guidanceScale to fixed: 0",
        check=lambda s: (
            not lacks(s.model.possible_families(), WITHOUT_GUIDANCE)
            or not s.search_space.guidance_scale.searched
        ),
        field_path=".searchSpace.guidanceScale",
    ),
)


# ----------------------------------------------------------------------------- held out


def _inline_overlap(spec: Any) -> str | None:
    if spec.validation is None:
        return None
    return first_overlap(spec.prompts.inline or [], spec.validation.prompts.inline or [])


_OVERLAP_CEL, _OVERLAP_MESSAGE_CEL = overlap_rule_cel("self.prompts.inline", "self.validation.prompts.inline")
_INLINE = "has(self.validation) && has(self.validation.prompts.inline) && has(self.prompts.inline)"
# Inline prompts here; the operator checks prompts from ConfigMaps when the search starts.
HELD_OUT_RULE = Rule(
    cel=f"!({_INLINE}) || {_OVERLAP_CEL}",
    message=OVERLAP_MESSAGE,
    check=lambda s: _inline_overlap(s) is None,
    field_path=".validation.prompts.inline",
    message_expression=f"!({_INLINE}) ? '{OVERLAP_MESSAGE}' : {_OVERLAP_MESSAGE_CEL}",
    describe=lambda s: overlap_message(_inline_overlap(s) or ""),
    admission=True,
)


# ----------------------------------------------------------------------------- the spec


class SustainSearchSpec(ApiModel):
    """A multi-objective search over the inference-time settings of a text-to-image model."""

    model: ModelSpec = Field(default_factory=ModelSpec, description="The model under search.")
    prompts: PromptsSpec = Field(description="Prompts and images per prompt.")
    search_space: SearchSpace = Field(default_factory=SearchSpace, description="Settings searched.")
    objectives: Annotated[list[Objective], Field(min_length=1, max_length=5)] = Field(
        default_factory=lambda: [
            Objective(name=ObjectiveName.GENDER_BIAS),
            Objective(name=ObjectiveName.ETHNIC_BIAS),
            Objective(name=ObjectiveName.ENERGY),
        ],
        description="Objectives; default gender bias, ethnic bias and energy.",
    )
    constraints: Constraints = Field(default_factory=Constraints, description="Constraints.")
    scoring: ScoringSpec = Field(default_factory=ScoringSpec, description="Scoring models.")
    algorithm: AlgorithmSpec = Field(default_factory=AlgorithmSpec, description="NSGA-II settings.")
    execution: ExecutionSpec = Field(default_factory=ExecutionSpec, description="Worker pods.")
    baselines: Annotated[list[Configuration], Field(max_length=10)] | None = Field(
        default=None, description="Configurations evaluated beside the model's defaults in generation 0."
    )
    reporting: Reporting = Field(default_factory=Reporting, description="Status contents.")
    validation: ValidationSpec | None = Field(
        default=None, description="Held-out validation of the front when the search ends; absent: none."
    )

    rules: ClassVar[tuple[Rule, ...]] = (
        *FAMILY_RULES,
        HELD_OUT_RULE,
        Rule(
            cel="self.objectives.all(o, self.objectives.exists_one(p, p.name == o.name))",
            message="each objective may appear only once",
            check=lambda s: len({o.name for o in s.objectives}) == len(s.objectives),
            field_path=".objectives",
        ),
        Rule(
            cel="!has(self.baselines) "
            "|| self.baselines.all(b, self.baselines.exists_one(c, c.name == b.name))",
            message="baseline names must be unique",
            check=lambda s: s.baselines is None or len({b.name for b in s.baselines}) == len(s.baselines),
            field_path=".baselines",
        ),
        Rule(
            cel="!has(self.searchSpace) || has(self.searchSpace.inferenceSteps.min) || "
            "has(self.searchSpace.guidanceScale.min) || has(self.searchSpace.positiveKeywords.pool) || "
            "has(self.searchSpace.negativeKeywords.pool) || has(self.searchSpace.promptWeight.min)",
            message="nothing to search: every variable of searchSpace is fixed",
            check=lambda s: any(
                v.searched
                for v in (
                    s.search_space.inference_steps,
                    s.search_space.guidance_scale,
                    s.search_space.positive_keywords,
                    s.search_space.negative_keywords,
                    s.search_space.prompt_weight,
                )
            ),
            field_path=".searchSpace",
        ),
        Rule(
            cel="!has(self.algorithm) || !has(self.algorithm.screening) "
            "|| self.algorithm.screening.imagesPerPrompt < self.prompts.imagesPerPrompt",
            message="algorithm.screening.imagesPerPrompt must be below prompts.imagesPerPrompt: "
            "the screening pass is a part of each candidate's images",
            check=lambda s: (
                s.algorithm.screening is None
                or s.algorithm.screening.images_per_prompt < s.prompts.images_per_prompt
            ),
            field_path=".algorithm.screening.imagesPerPrompt",
        ),
        Rule(
            cel="!has(self.algorithm) || !has(self.algorithm.evidence) "
            "|| self.algorithm.evidence.maxImagesPerPrompt > self.prompts.imagesPerPrompt",
            message="algorithm.evidence.maxImagesPerPrompt must be above prompts.imagesPerPrompt: "
            "it caps the images a front point gets in all",
            check=lambda s: (
                s.algorithm.evidence is None
                or s.algorithm.evidence.max_images_per_prompt > s.prompts.images_per_prompt
            ),
            field_path=".algorithm.evidence.maxImagesPerPrompt",
        ),
        Rule(
            cel="!has(self.algorithm) || !has(self.algorithm.adaptive) "
            "|| (!has(self.algorithm.screening) && !has(self.algorithm.evidence))",
            message="algorithm.adaptive decides which candidates get more images: it replaces "
            "algorithm.screening and algorithm.evidence, set one of them",
            check=lambda s: (
                s.algorithm.adaptive is None
                or (s.algorithm.screening is None and s.algorithm.evidence is None)
            ),
            field_path=".algorithm.adaptive",
        ),
        Rule(
            cel="!has(self.algorithm) || !has(self.algorithm.adaptive) "
            "|| self.prompts.imagesPerPrompt % self.algorithm.adaptive.imagesPerPrompt == 0",
            message="prompts.imagesPerPrompt must be a multiple of algorithm.adaptive.imagesPerPrompt: "
            "a whole evaluation is a number of batches",
            check=lambda s: (
                s.algorithm.adaptive is None
                or s.prompts.images_per_prompt % s.algorithm.adaptive.images_per_prompt == 0
            ),
            field_path=".algorithm.adaptive.imagesPerPrompt",
        ),
        Rule(
            cel="!has(self.algorithm) || !has(self.algorithm.adaptive) "
            "|| self.algorithm.adaptive.maxImagesPerPrompt >= self.prompts.imagesPerPrompt",
            message="algorithm.adaptive.maxImagesPerPrompt must be at least prompts.imagesPerPrompt: "
            "it caps the images a front point gets in all",
            check=lambda s: (
                s.algorithm.adaptive is None
                or s.algorithm.adaptive.max_images_per_prompt >= s.prompts.images_per_prompt
            ),
            field_path=".algorithm.adaptive.maxImagesPerPrompt",
        ),
    )

    def objective_names(self) -> list[ObjectiveName]:
        return [o.name for o in self.objectives]


# Fields whose change would corrupt a running search; the CRD refuses changes to them.
IMMUTABLE_SPEC_FIELDS = {
    "model": immutable("model"),
    "prompts": immutable("prompts"),
    "searchSpace": immutable("searchSpace"),
    "objectives": immutable("objectives"),
    "constraints": immutable("constraints"),
    "scoring": immutable("scoring"),
    "baselines": immutable("baselines"),
}
IMMUTABLE_ALGORITHM_FIELDS = {
    "populationSize": immutable("algorithm.populationSize"),
    "crossoverProbability": immutable("algorithm.crossoverProbability"),
    "mutationProbability": immutable("algorithm.mutationProbability"),
    "seed": immutable("algorithm.seed"),
    "screening": immutable("algorithm.screening"),
    "evidence": immutable("algorithm.evidence"),
    "adaptive": immutable("algorithm.adaptive"),
}
