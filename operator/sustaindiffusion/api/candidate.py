"""One candidate configuration: concrete generation settings, its stable id and its prompt texts.

Shared by the engine (which decodes genes into settings), the worker (which generates with them)
and reports and profiles (which show them).
"""

from __future__ import annotations

import hashlib
import json
from typing import Annotated

from pydantic import Field

from sustaindiffusion.api.rules import ApiModel

EMPHASIS_PER_MARK = 1.1  # each "+" multiplies a keyword's weight by 1.1 (Compel syntax)
# diffusers' SD3 and SD1 pipelines apply classifier-free guidance only when guidance_scale > 1;
# at or below it the negative prompt takes no part in the images.
GUIDANCE_OFF_AT_OR_BELOW = 1.0


class CandidateSettings(ApiModel):
    """Concrete inference-time settings. Absent steps or guidance: the pipeline's default."""

    inference_steps: int | None = Field(
        default=None, description="Denoising steps (absent: pipeline default)."
    )
    guidance_scale: float | None = Field(
        default=None, description="Guidance scale (absent: pipeline default)."
    )
    positive_keywords: Annotated[list[str], Field(max_length=64)] = Field(
        default_factory=list, description="Keywords appended to the prompt."
    )
    negative_keywords: Annotated[list[str], Field(max_length=64)] = Field(
        default_factory=list, description="Negative prompt keywords."
    )
    prompt_weight: int = Field(default=0, description="Emphasis marks on each keyword (x1.1 each).")

    def candidate_id(self) -> str:
        """A stable id: the hash of the canonical settings, equal for equal settings on any machine."""
        canonical = json.dumps(
            self.model_dump(mode="json", by_alias=True), sort_keys=True, separators=(",", ":")
        )
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def canonical(self) -> CandidateSettings:
        """The same images' settings with what provably cannot change them removed, so that
        equivalent settings share one id and are evaluated once: negative keywords when guidance
        is off (classifier-free guidance disabled: no negative prompt is used), and the weight when
        no keyword is left for it to emphasise. Absent guidance is the family's default (above 1
        for every family that has a negative prompt), so it keeps its negative keywords."""
        negative = self.negative_keywords
        if self.guidance_scale is not None and self.guidance_scale <= GUIDANCE_OFF_AT_OR_BELOW:
            negative = []
        weight = self.prompt_weight if (self.positive_keywords or negative) else 0
        if negative == self.negative_keywords and weight == self.prompt_weight:
            return self
        return self.model_copy(update={"negative_keywords": negative, "prompt_weight": weight})

    def keyword_emphasis(self) -> float:
        return float(EMPHASIS_PER_MARK**self.prompt_weight)

    def weighted_keyword(self, keyword: str) -> str:
        """`keyword` with its emphasis marks in Compel syntax: `(film grain)++`."""
        if self.prompt_weight == 0:
            return keyword
        return f"({keyword}){'+' * self.prompt_weight}"

    def positive_prompt(self, base_prompt: str) -> str:
        """The base prompt with the selected keywords appended, comma separated, with weight marks."""
        if not self.positive_keywords:
            return base_prompt
        # "..., photograph" reads better than "...codes., photograph".
        parts = [base_prompt.rstrip().rstrip(".,"), *map(self.weighted_keyword, self.positive_keywords)]
        return ", ".join(p for p in parts if p)

    def negative_prompt(self) -> str:
        return ", ".join(map(self.weighted_keyword, self.negative_keywords))
