"""A table of invalid SustainSearch specs, each with the field path and the message both the API
server and local validation must give. Shared by the unit tests (local validation) and the
end-to-end tests (the real API server), so the two paths are held to the same words."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

DELETE = object()

BASE_SPEC: dict[str, Any] = {"prompts": {"inline": ["Photo portrait of a Software Engineer that codes"]}}


@dataclass(frozen=True)
class InvalidCase:
    name: str
    changes: dict[str, Any]  # dotted path -> new value (DELETE removes the key)
    path: str  # the field path reported, a prefix for map keys
    message: str  # a fragment of the message

    def spec(self) -> dict[str, Any]:
        spec = copy.deepcopy(BASE_SPEC)
        for dotted, value in self.changes.items():
            *parents, leaf = dotted.split(".")
            node = spec
            for part in parents:
                node = node.setdefault(part, {})
            if value is DELETE:
                node.pop(leaf, None)
            else:
                node[leaf] = value
        return spec


ALL_FIXED = {
    "inferenceSteps": {"fixed": 28},
    "guidanceScale": {"fixed": 7.0},
    "positiveKeywords": {"fixed": []},
    "negativeKeywords": {"fixed": []},
    "promptWeight": {"fixed": 0},
}

INVALID_CASES = [
    InvalidCase("prompts missing", {"prompts": DELETE}, "spec.prompts", "Required value"),
    InvalidCase(
        "prompts neither inline nor by reference",
        {"prompts": {"imagesPerPrompt": 4}},
        "spec.prompts",
        "give prompts inline or by configMapRef",
    ),
    InvalidCase(
        "empty inline prompts",
        {"prompts.inline": []},
        "spec.prompts",
        "give prompts inline or by configMapRef",
    ),
    InvalidCase(
        "no images",
        {"prompts.imagesPerPrompt": 0},
        "spec.prompts.imagesPerPrompt",
        "greater than or equal to 1",
    ),
    InvalidCase(
        "too many images",
        {"prompts.imagesPerPrompt": 1001},
        "spec.prompts.imagesPerPrompt",
        "less than or equal to 1000",
    ),
    InvalidCase(
        "unknown seed mode",
        {"prompts.seeds": {"mode": "Random"}},
        "spec.prompts.seeds.mode",
        "Unsupported value",
    ),
    InvalidCase(
        "bad ConfigMap name",
        {"prompts.configMapRef": {"name": "Bad_Name"}},
        "spec.prompts.configMapRef.name",
        "should match",
    ),
    InvalidCase(
        "steps min above max",
        {"searchSpace.inferenceSteps": {"min": 50, "max": 30}},
        "spec.searchSpace.inferenceSteps",
        "min must not exceed max",
    ),
    InvalidCase(
        "steps fixed and ranged",
        {"searchSpace.inferenceSteps": {"min": 20, "max": 30, "fixed": 25}},
        "spec.searchSpace.inferenceSteps",
        "set either fixed or min and max",
    ),
    InvalidCase(
        "steps min without max",
        {"searchSpace.inferenceSteps": {"min": 20}},
        "spec.searchSpace.inferenceSteps",
        "min and max must be given together",
    ),
    InvalidCase(
        "steps above limit",
        {"searchSpace.inferenceSteps": {"min": 20, "max": 501}},
        "spec.searchSpace.inferenceSteps.max",
        "less than or equal to 500",
    ),
    InvalidCase(
        "steps not an integer",
        {"searchSpace.inferenceSteps": {"fixed": "many"}},
        "spec.searchSpace.inferenceSteps.fixed",
        "must be of type integer",
    ),
    InvalidCase(
        "guidance step zero",
        {"searchSpace.guidanceScale": {"min": 1.0, "max": 9.0, "step": 0}},
        "spec.searchSpace.guidanceScale.step",
        "greater than 0",
    ),
    InvalidCase(
        "guidance step wider than range",
        {"searchSpace.guidanceScale": {"min": 1.0, "max": 2.0, "step": 5.0}},
        "spec.searchSpace.guidanceScale",
        "step must not exceed max - min",
    ),
    InvalidCase(
        "guidance min above max",
        {"searchSpace.guidanceScale": {"min": 9.0, "max": 2.0}},
        "spec.searchSpace.guidanceScale",
        "min must not exceed max",
    ),
    InvalidCase(
        "keywords pooled and fixed",
        {"searchSpace.positiveKeywords": {"pool": ["a"], "fixed": ["b"]}},
        "spec.searchSpace.positiveKeywords",
        "set exactly one of pool or fixed",
    ),
    InvalidCase(
        "keywords neither pooled nor fixed",
        {"searchSpace.negativeKeywords": {}},
        "spec.searchSpace.negativeKeywords",
        "set exactly one of pool or fixed",
    ),
    InvalidCase(
        "empty keyword pool",
        {"searchSpace.positiveKeywords": {"pool": []}},
        "spec.searchSpace.positiveKeywords",
        "pool must not be empty",
    ),
    InvalidCase(
        "duplicate keyword",
        {"searchSpace.negativeKeywords": {"pool": ["art", "sketch", "art"]}},
        "spec.searchSpace.negativeKeywords.pool",
        'Duplicate value: "art"',
    ),
    InvalidCase(
        "keyword too long",
        {"searchSpace.positiveKeywords": {"pool": ["x" * 101]}},
        "spec.searchSpace.positiveKeywords.pool[0]",
        "Too long",
    ),
    InvalidCase(
        "prompt weight too high",
        {"searchSpace.promptWeight": {"min": 0, "max": 11}},
        "spec.searchSpace.promptWeight.max",
        "less than or equal to 10",
    ),
    InvalidCase("nothing to search", {"searchSpace": ALL_FIXED}, "spec.searchSpace", "nothing to search"),
    InvalidCase(
        "screening as many images as the budget",
        {"prompts.imagesPerPrompt": 8, "algorithm.screening": {"imagesPerPrompt": 8}},
        "spec.algorithm.screening.imagesPerPrompt",
        "algorithm.screening.imagesPerPrompt must be below prompts.imagesPerPrompt",
    ),
    InvalidCase(
        "screening on the default budget with more images",
        {"algorithm.screening": {"imagesPerPrompt": 25}},
        "spec.algorithm.screening.imagesPerPrompt",
        "must be below prompts.imagesPerPrompt",
    ),
    InvalidCase(
        "screening without images",
        {"algorithm.screening": {"imagesPerPrompt": 0}},
        "spec.algorithm.screening.imagesPerPrompt",
        "greater than or equal to 1",
    ),
    InvalidCase(
        "screening confidence below one half",
        {"algorithm.screening": {"imagesPerPrompt": 4, "confidence": 0.4}},
        "spec.algorithm.screening.confidence",
        "greater than or equal to 0.5",
    ),
    InvalidCase(
        "evidence capped at the images a candidate already has",
        {"prompts.imagesPerPrompt": 8, "algorithm.evidence": {"imagesPerPrompt": 4, "maxImagesPerPrompt": 8}},
        "spec.algorithm.evidence.maxImagesPerPrompt",
        "algorithm.evidence.maxImagesPerPrompt must be above prompts.imagesPerPrompt",
    ),
    InvalidCase(
        "evidence without images",
        {"algorithm.evidence": {"imagesPerPrompt": 0, "maxImagesPerPrompt": 40}},
        "spec.algorithm.evidence.imagesPerPrompt",
        "greater than or equal to 1",
    ),
    InvalidCase(
        "evidence without a cap",
        {"algorithm.evidence": {"imagesPerPrompt": 5}},
        "spec.algorithm.evidence.maxImagesPerPrompt",
        "Required",
    ),
    InvalidCase("no objectives", {"objectives": []}, "spec.objectives", "at least 1 items"),
    InvalidCase(
        "duplicate objective",
        {"objectives": [{"name": "Energy"}, {"name": "Energy", "direction": "Minimize"}]},
        "spec.objectives",
        "each objective may appear only once",
    ),
    InvalidCase(
        "unknown objective",
        {"objectives": [{"name": "Beauty"}]},
        "spec.objectives[0].name",
        'Unsupported value: "Beauty"',
    ),
    InvalidCase(
        "unknown direction",
        {"objectives": [{"name": "Energy", "direction": "Up"}]},
        "spec.objectives[0].direction",
        "Unsupported value",
    ),
    InvalidCase(
        "too many objectives",
        {
            "objectives": [
                {"name": n} for n in ("GenderBias", "EthnicBias", "Energy", "Quality", "Time", "Energy")
            ]
        },
        "spec.objectives",
        "must have at most 5 items",
    ),
    InvalidCase(
        "quality tolerance above one",
        {"constraints": {"quality": {"tolerance": 1.5}}},
        "spec.constraints.quality.tolerance",
        "less than or equal to 1",
    ),
    InvalidCase(
        "negative human-filter retries",
        {"scoring": {"humanFilter": {"maxRetries": -1}}},
        "spec.scoring.humanFilter.maxRetries",
        "greater than or equal to 0",
    ),
    InvalidCase(
        "unknown quality scorer",
        {"scoring": {"quality": {"scorer": "FID"}}},
        "spec.scoring.quality.scorer",
        "Unsupported value",
    ),
    InvalidCase(
        "population too small for NSGA-II",
        {"algorithm": {"populationSize": 2}},
        "spec.algorithm.populationSize",
        "greater than or equal to 4",
    ),
    InvalidCase(
        "crossover probability above one",
        {"algorithm": {"crossoverProbability": 1.5}},
        "spec.algorithm.crossoverProbability",
        "less than or equal to 1",
    ),
    InvalidCase(
        "negative seed", {"algorithm": {"seed": -1}}, "spec.algorithm.seed", "greater than or equal to 0"
    ),
    InvalidCase(
        "zero energy budget",
        {"algorithm": {"termination": {"energyBudgetJoules": 0}}},
        "spec.algorithm.termination.energyBudgetJoules",
        "greater than 0",
    ),
    InvalidCase(
        "zero parallelism",
        {"execution": {"parallelism": 0}},
        "spec.execution.parallelism",
        "greater than or equal to 1",
    ),
    InvalidCase(
        "shards too large for a termination message",
        {"execution": {"candidatesPerPod": 17}},
        "spec.execution.candidatesPerPod",
        "less than or equal to 16",
    ),
    InvalidCase(
        "queue name not label-safe",
        {"execution": {"queueName": "team a/gpu"}},
        "spec.execution",
        "queueName must be a valid label value",
    ),
    InvalidCase(
        "workload priority class not label-safe",
        {"execution": {"workloadPriorityClass": "high priority"}},
        "spec.execution",
        "workloadPriorityClass must be a valid label value",
    ),
    InvalidCase(
        "queue name too long", {"execution": {"queueName": "q" * 64}}, "spec.execution.queueName", "Too long"
    ),
    InvalidCase(
        "resource value not a quantity",
        {"execution": {"resources": {"limits": {"memory": "lots"}}}},
        "spec.execution.resources.limits",
        "must be a Kubernetes quantity",
    ),
    InvalidCase(
        "toleration effect unknown",
        {"execution": {"tolerations": [{"key": "nvidia.com/gpu", "effect": "Sometimes"}]}},
        "spec.execution.tolerations[0].effect",
        "should match",
    ),
    InvalidCase(
        "pod deadline too short",
        {"execution": {"podDeadlineSeconds": 10}},
        "spec.execution.podDeadlineSeconds",
        "greater than or equal to 60",
    ),
    InvalidCase(
        "artifacts without a claim",
        {"execution": {"artifacts": {"path": "/out"}}},
        "spec.execution.artifacts.claimName",
        "Required value",
    ),
    InvalidCase("width not a multiple of 8", {"model": {"width": 500}}, "spec.model", "multiples of 8"),
    InvalidCase(
        "width too small", {"model": {"width": 32}}, "spec.model.width", "greater than or equal to 64"
    ),
    InvalidCase(
        "unknown dtype", {"model": {"dtype": "int8"}}, "spec.model.dtype", 'Unsupported value: "int8"'
    ),
    InvalidCase(
        "pipeline class not a pipeline",
        {"model": {"pipelineClass": "Unet"}},
        "spec.model.pipelineClass",
        "should match",
    ),
    InvalidCase(
        "unknown model family",
        {"model.family": "Kandinsky"},
        "spec.model.family",
        'Unsupported value: "Kandinsky"',
    ),
    InvalidCase(
        "negative keyword pool on FLUX.1-dev (the default pool)",
        {"model.family": "Flux1Dev"},
        "spec.searchSpace.negativeKeywords",
        "FLUX.1-dev and FLUX.1-schnell have no negative prompt (no classifier-free guidance): "
        "set negativeKeywords to fixed: []",
    ),
    InvalidCase(
        "fixed negative keywords on a FLUX.1 hub id",
        {
            "model.id": "black-forest-labs/FLUX.1-schnell",
            "searchSpace.guidanceScale": {"fixed": 0.0},
            "searchSpace.negativeKeywords": {"fixed": ["lowres"]},
        },
        "spec.searchSpace.negativeKeywords",
        "have no negative prompt (no classifier-free guidance)",
    ),
    InvalidCase(
        "negative keywords on a FluxPipeline of unknown id",
        {"model.id": "/models/my-flux", "model.pipelineClass": "FluxPipeline"},
        "spec.searchSpace.negativeKeywords",
        "have no negative prompt (no classifier-free guidance)",
    ),
    InvalidCase(
        "guidance searched on FLUX.1-schnell",
        {"model.family": "Flux1Schnell", "searchSpace.negativeKeywords": {"fixed": []}},
        "spec.searchSpace.guidanceScale",
        "FLUX.1-schnell takes no guidance (the value is ignored): set guidanceScale to fixed: 0",
    ),
    InvalidCase(
        "guidance searched on the FLUX.1-schnell hub id",
        {"model.id": "black-forest-labs/FLUX.1-schnell", "searchSpace.negativeKeywords": {"fixed": []}},
        "spec.searchSpace.guidanceScale",
        "takes no guidance",
    ),
    InvalidCase(
        "a baseline with negative keywords on FLUX.1",
        {
            "model.family": "Flux1Dev",
            "searchSpace.negativeKeywords": {"fixed": []},
            "baselines": [{"name": "plain", "negativeKeywords": ["lowres"]}],
        },
        "spec.baselines",
        "have no negative prompt: baselines must not set negativeKeywords",
    ),
    InvalidCase(
        "duplicate baseline names",
        {"baselines": [{"name": "fast", "inferenceSteps": 20}, {"name": "fast", "inferenceSteps": 30}]},
        "spec.baselines",
        "baseline names must be unique",
    ),
    InvalidCase(
        "front cap zero",
        {"reporting": {"maxFrontEntries": 0}},
        "spec.reporting.maxFrontEntries",
        "greater than or equal to 1",
    ),
    InvalidCase("unknown field", {"searchSpce": {}}, "spec.searchSpce", "unknown field"),
]


# Specs the family rules must accept (the same on the API server and locally): what a family can use.
VALID_FAMILY_CASES: dict[str, dict[str, Any]] = {
    "a FluxPipeline of unknown id may be FLUX.1-dev: guidance searched": {
        "model": {"id": "/models/my-flux", "pipelineClass": "FluxPipeline"},
        "searchSpace": {"negativeKeywords": {"fixed": []}},
    },
    "FLUX.1-dev searches its distilled guidance": {
        "model": {"family": "Flux1Dev"},
        "searchSpace": {"negativeKeywords": {"fixed": []}, "guidanceScale": {"min": 1.0, "max": 6.0}},
        "baselines": [{"name": "card", "inferenceSteps": 50, "guidanceScale": 3.5}],
    },
    "FLUX.1-schnell with a fixed guidance it ignores": {
        "model": {"family": "Flux1Schnell"},
        "searchSpace": {"negativeKeywords": {"fixed": []}, "guidanceScale": {"fixed": 3.5}},
    },
    "a known hub id decides over the pipeline class": {
        "model": {"id": "stabilityai/stable-diffusion-3.5-large", "pipelineClass": "FluxPipeline"},
    },
    "SDXL with the method's pools": {"model": {"family": "StableDiffusionXL"}},
}


def valid_family_spec(name: str) -> dict[str, Any]:
    return copy.deepcopy(BASE_SPEC) | copy.deepcopy(VALID_FAMILY_CASES[name])
