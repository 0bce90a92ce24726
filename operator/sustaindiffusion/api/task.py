"""The evaluation task: what the operator (or the local runner) hands a worker.

One task describes a round of a generation; a worker pod evaluates one shard of it (shard i holds
candidates [i * candidates_per_shard, (i + 1) * candidates_per_shard)), so one ConfigMap and one
Indexed Job serve a round. Round 0 holds the generation's candidates; a later round holds only the
candidates an earlier round left without a usable result (a report lost, unreadable or partial).
With screening, a generation has two parts, each with its own rounds (numbered on): the screening
pass (images [0, k) of each prompt) and the rest for the survivors (images [k, n)); `first_image`
says where a task's images start, so each image keeps its own seed whichever part generates it.
With the adaptive evidence policy, a generation's images come in sequential batches (`batch`, from
0), each a task of its own; `call_images` makes every part of a candidate's images run in the calls
a whole evaluation of them would (cut on one grid of image indices), so their energy per image is
comparable. The task is written once and read back: its shard map is the one that counts. It
carries everything needed and nothing secret.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum
from typing import Annotated

from pydantic import Field

from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.api.rules import ApiModel
from sustaindiffusion.api.spec import (
    MAX_SEED,
    ModelSpec,
    ScoringSpec,
    SeedMode,
    SeedPolicy,
    SustainSearchSpec,
)

TASK_VERSION = 1


class Part(StrEnum):
    """The part of a search that a task, a result and an archive record belong to: which of a
    candidate's images it generates, and for what. The engine runs one at a time (`engine.part`);
    an archive record names it as its stage."""

    WHOLE = "whole"  # all of them (no screening)
    SCREEN = "screen"  # the screening pass
    REST = "rest"  # the rest, for candidates that survived the screening
    EVIDENCE = "evidence"  # more images for front points, each from its own next index
    VALIDATION = "validation"  # the held-out evaluation at the end (its tasks say whole: see `part`)
    BATCH = "batch"  # a sequential batch of the adaptive evidence policy, from each one's next index


class TaskCandidate(ApiModel):
    candidate_id: str = Field(description="Stable candidate id.")
    settings: CandidateSettings = Field(description="Settings to generate with.")
    first_image: int | None = Field(
        default=None, ge=0, description="Its first image index per prompt; absent: the task's."
    )


class EvaluationTask(ApiModel):
    version: int = Field(default=TASK_VERSION, description="Task format version.")
    search: Annotated[str, Field(max_length=253)] = Field(
        description="Name of the search, for logs and metrics."
    )
    generation: int = Field(ge=0, description="Search generation of these candidates.")
    model: ModelSpec = Field(description="The model to load.")
    prompts: Annotated[list[str], Field(min_length=1)] = Field(description="Prompts, already resolved.")
    images_per_prompt: int = Field(ge=1, description="Images per prompt and candidate.")
    seeds: SeedPolicy = Field(default_factory=SeedPolicy, description="Seed policy.")
    scoring: ScoringSpec = Field(default_factory=ScoringSpec, description="Scoring models.")
    candidates: Annotated[list[TaskCandidate], Field(min_length=1)] = Field(description="All candidates.")
    candidates_per_shard: int = Field(ge=1, description="Candidates per worker pod.")
    save_images: bool = Field(default=False, description="Write images to the artifacts directory.")
    round: int = Field(default=0, ge=0, description="Round of the generation (0: its first).")
    retries: int = Field(
        default=0, ge=0, description="Retries of a failed worker run of a shard (for the executor)."
    )
    seed_stream: Annotated[str, Field(max_length=32)] = Field(
        default="", description="Seeds of another stream are disjoint from the search's (validation)."
    )
    per_prompt: bool = Field(default=False, description="Report each prompt's statistics (validation).")
    part: Part = Field(
        default=Part.WHOLE,
        description="Which part of each candidate's images this is (a held-out evaluation's tasks say "
        "whole, as workers before that part read them; their seed stream tells them apart).",
    )
    first_image: int = Field(
        default=0, ge=0, description="Index of the first image per prompt (its seed's image index)."
    )
    batch: int = Field(
        default=0, ge=0, description="The adaptive policy's sequential batch of the generation (0 otherwise)."
    )
    call_images: int | None = Field(
        default=None,
        ge=1,
        le=1000,
        description="Generate each prompt's images in calls cut at every multiple of this image index "
        "(and retries in calls of at most this many); absent: as many per call as fit.",
    )

    @classmethod
    def of(
        cls,
        search: str,
        spec: SustainSearchSpec,
        generation: int,
        prompts: list[str],
        candidates: list[TaskCandidate],
        candidates_per_shard: int,
        save_images: bool,
        round: int = 0,
        retries: int | None = None,
    ) -> EvaluationTask:
        """The task of `candidates` under `spec` (model, prompts, seeds, scoring and, unless given,
        retries come from it)."""
        return cls(
            search=search,
            generation=generation,
            model=spec.model,
            prompts=prompts,
            images_per_prompt=spec.prompts.images_per_prompt,
            seeds=spec.prompts.seeds,
            scoring=spec.scoring,
            candidates=candidates,
            candidates_per_shard=candidates_per_shard,
            save_images=save_images,
            round=round,
            retries=spec.execution.retries_per_candidate if retries is None else retries,
        )

    def members(self, shard: int) -> set[str]:
        return {c.candidate_id for c in self.shard(shard)}

    @property
    def shard_count(self) -> int:
        return -(-len(self.candidates) // self.candidates_per_shard)

    def shard(self, index: int) -> list[TaskCandidate]:
        if not 0 <= index < self.shard_count:
            raise ValueError(f"shard index {index} out of range: this task has {self.shard_count} shards")
        start = index * self.candidates_per_shard
        return self.candidates[start : start + self.candidates_per_shard]


def image_seed(
    policy: SeedPolicy,
    prompt_index: int,
    image_index: int,
    candidate_id: str,
    attempt: int = 0,
    stream: str = "",
) -> int:
    """The seed of one image. SameForAllCandidates compares candidates on equal noise; a human-filter
    retry (attempt > 0) gets a new seed that is still reproducible; another `stream` (held-out
    validation's) draws from other seeds than the search's."""
    key = f"{policy.base}:{prompt_index}:{image_index}:{attempt}"
    if stream:
        key = f"{stream}:{key}"
    if policy.mode is SeedMode.PER_CANDIDATE:
        key += f":{candidate_id}"
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big") % MAX_SEED
