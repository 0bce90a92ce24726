"""A table of invalid SustainSearch specs, each with the field path and the message both the API
server and local validation must give. Shared by the unit tests (local validation) and the
end-to-end tests (the real API server), so the two paths are held to the same words."""

from __future__ import annotations

import copy
import random
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
    InvalidCase(
        "adaptive evidence beside screening",
        {"algorithm.adaptive": {}, "algorithm.screening": {"imagesPerPrompt": 4}},
        "spec.algorithm.adaptive",
        "algorithm.adaptive decides which candidates get more images",
    ),
    InvalidCase(
        "adaptive batches that do not divide a whole evaluation",
        {"algorithm.adaptive": {"imagesPerPrompt": 3}},
        "spec.algorithm.adaptive.imagesPerPrompt",
        "prompts.imagesPerPrompt must be a multiple of algorithm.adaptive.imagesPerPrompt",
    ),
    InvalidCase(
        "adaptive cap below a whole evaluation",
        {"algorithm.adaptive": {"maxImagesPerPrompt": 10}},
        "spec.algorithm.adaptive.maxImagesPerPrompt",
        "algorithm.adaptive.maxImagesPerPrompt must be at least prompts.imagesPerPrompt",
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
        "cross-check by the detector's own family",
        {"scoring": {"crossCheck": {"family": "Vqa"}}},
        "spec.scoring.crossCheck.family",
        "crossCheck.family must differ from the detector's family",
    ),
    InvalidCase(
        "unknown detector family",
        {"scoring": {"detector": "Owl"}},
        "spec.scoring.detector",
        "Unsupported value",
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
    # Resources, as Kubernetes judges a container's (tests/e2e/test_api_server.py checks each case
    # against a bare Pod too: what a Pod may not have, a search may not either).
    InvalidCase(
        "resource name not for containers",
        {"execution": {"resources": {"limits": {"gpu": 1}}}},
        "spec.execution.resources.limits",
        '"gpu" is not a resource a container can request',
    ),
    InvalidCase(
        "a quota's resource name",
        {"execution": {"resources": {"requests": {"pods": "1"}}}},
        "spec.execution.resources.requests",
        '"pods" is not a resource a container can request',
    ),
    InvalidCase(
        "resource name with two slashes",
        {"execution": {"resources": {"limits": {"example.com/gpu/big": 1}}}},
        "spec.execution.resources.limits",
        '"example.com/gpu/big" is not a resource a container can request',
    ),
    InvalidCase(
        "extended resource under the quota prefix",
        {"execution": {"resources": {"limits": {"requests.nvidia.com/gpu": 1}}}},
        "spec.execution.resources.limits",
        "is not a resource a container can request",
    ),
    InvalidCase(
        "huge pages of page size zero",
        {"execution": {"resources": {"limits": {"hugepages-0": "0", "memory": "1Gi"}}}},
        "spec.execution.resources.limits",
        '"hugepages-0" is not a resource a container can request',
    ),
    InvalidCase(
        "negative cpu",
        {"execution": {"resources": {"limits": {"cpu": "-1"}}}},
        "spec.execution.resources.limits",
        "must be greater than or equal to 0",
    ),
    InvalidCase(
        "negative memory as an integer",
        {"execution": {"resources": {"requests": {"memory": -1}}}},
        "spec.execution.resources.requests",
        "must be greater than or equal to 0",
    ),
    InvalidCase(
        "decimal suffix in the wrong case",
        {"execution": {"resources": {"limits": {"memory": "16GB"}}}},
        "spec.execution.resources.limits",
        "must be a Kubernetes quantity",
    ),
    InvalidCase(
        "binary suffix in lower case",
        {"execution": {"resources": {"limits": {"memory": "1ki"}}}},
        "spec.execution.resources.limits",
        "must be a Kubernetes quantity",
    ),
    InvalidCase(
        "an exponent that would stall the API server",
        {"execution": {"resources": {"limits": {"memory": "1e-9999999999"}}}},
        "spec.execution.resources.limits",
        "(an exponent has at most two digits)",
    ),
    InvalidCase(
        "absurd cpu",
        {"execution": {"resources": {"limits": {"cpu": "1e30"}}}},
        "spec.execution.resources.limits",
        "must be at most 9007199254740992 (2^53)",
    ),
    InvalidCase(
        "memory beyond what Kubernetes counts exactly",
        {"execution": {"resources": {"limits": {"memory": "9Ei"}}}},
        "spec.execution.resources.limits",
        "must be at most 9007199254740992 (2^53)",
    ),
    InvalidCase(
        "half a GPU",
        {"execution": {"resources": {"limits": {"nvidia.com/gpu": "0.5"}}}},
        "spec.execution.resources.limits",
        "nvidia.com/gpu: 0.5 must be an integer: an extended resource counts whole devices",
    ),
    InvalidCase(
        "GPUs in thousandths",
        {"execution": {"resources": {"limits": {"nvidia.com/gpu": "1500m"}}}},
        "spec.execution.resources.limits",
        "nvidia.com/gpu: 1500m must be an integer",
    ),
    InvalidCase(
        "a tenth of a byte (100m for 100Mi)",
        {"execution": {"resources": {"limits": {"memory": "100m"}}}},
        "spec.execution.resources.limits",
        "memory: 100m is a fraction of a byte: give whole bytes (100m is a tenth of a byte; 100Mi is "
        "100 MiB)",
    ),
    InvalidCase(
        "huge pages not a whole number of pages",
        {"execution": {"resources": {"limits": {"hugepages-2Mi": "3Mi", "memory": "1Gi"}}}},
        "spec.execution.resources.limits",
        "hugepages-2Mi: 3Mi is not a whole number of pages",
    ),
    InvalidCase(
        "cpu request above its limit",
        {"execution": {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1500m"}}}},
        "spec.execution.resources.requests",
        "cpu: request 2, limit 1500m: a request must not be above its limit",
    ),
    InvalidCase(
        "memory request above its limit",
        {"execution": {"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "2G"}}}},
        "spec.execution.resources.requests",
        "memory: request 2Gi, limit 2G: a request must not be above its limit",
    ),
    InvalidCase(
        "GPU request below its limit",
        {"execution": {"resources": {"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 2}}}},
        "spec.execution.resources.requests",
        "nvidia.com/gpu: request 1, limit 2: a request must equal its limit (Kubernetes never overcommits "
        "extended resources and huge pages)",
    ),
    InvalidCase(
        "GPU request without a limit",
        {"execution": {"resources": {"requests": {"nvidia.com/gpu": 1, "cpu": "1"}}}},
        "spec.execution.resources.requests",
        "nvidia.com/gpu: request 1: a request needs a limit equal to it (Kubernetes never overcommits "
        "extended resources and huge pages)",
    ),
    InvalidCase(
        "huge pages without cpu or memory",
        {"execution": {"resources": {"limits": {"hugepages-2Mi": "4Mi", "nvidia.com/gpu": 1}}}},
        "spec.execution.resources",
        "huge pages need a cpu or memory request or limit beside them",
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
    # Held-out prompts are not search prompts, compared without case, whitespace runs and final
    # punctuation (the method's 56-prompt file holds its search prompt with a final period).
    InvalidCase(
        "the search prompt held out with a final period",
        {"validation": {"prompts": {"inline": ["Photo portrait of a Software Engineer that codes."]}}},
        "spec.validation.prompts.inline",
        'held-out prompt "Photo portrait of a Software Engineer that codes." is also a search prompt '
        "(compared without case, runs of whitespace and final punctuation): a held-out figure on it "
        "would be in-sample",
    ),
    InvalidCase(
        "the search prompt held out in other case and spacing",
        {
            "validation": {
                "prompts": {
                    "inline": [
                        "Photo portrait of a nurse",
                        "  photo PORTRAIT of a software\tengineer  that codes?! ",
                    ]
                }
            }
        },
        "spec.validation.prompts.inline",
        'held-out prompt "  photo PORTRAIT of a software\tengineer  that codes?! " is also a search prompt',
    ),
    InvalidCase(
        "a prompt longer than a text encoder reads",
        {"prompts.inline": ["a photo of " + "x" * 990]},
        "spec.prompts.inline[0]",
        "may not be more than 1000",
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


# Resource maps drawn from names and values a cluster accepts and refuses, for the test that
# whatever Kubernetes refuses for a Pod's container, a search refuses too, on the API server and
# locally alike (tests/e2e/test_api_server.py). No exponent here has more than two digits: longer
# ones stall the API server's quantity parser (see sustaindiffusion/api/quantities.py).
CONTAINER_RESOURCES = (
    "cpu",
    "memory",
    "ephemeral-storage",
    "nvidia.com/gpu",
    "example.com/fpga",
    "kubernetes.io/widgets",
    "hugepages-2Mi",
    "hugepages-1Gi",
)
RESOURCE_NAMES = (
    *CONTAINER_RESOURCES,
    "gpu",
    "Memory",
    "pods",
    "requests.nvidia.com/gpu",
    "hugepages-0",
    "hugepages-1.5",
    "example.com/a/b",
    "Example.com/x",
)
RESOURCE_VALUES: tuple[int | str, ...] = (
    0,
    1,
    2,
    -1,
    "0",
    "1",
    "2",
    "-1",
    "-0",
    "+1",
    "0.5",
    "1.5",
    ".5",
    "5.",
    "100m",
    "1000m",
    "1500m",
    "2Mi",
    "3Mi",
    "4Mi",
    "0.5Ki",
    "1Gi",
    "2Gi",
    "1G",
    "1e3",
    "1E2",
    "1e-3",
    "1e30",
    "9007199254740993",
    "1.0000000001",
    "0.9999999999",
    "16GB",
    "1ki",
    "lots",
)


def resource_probes(count: int, seed: int = 30) -> list[dict[str, dict[str, int | str]]]:
    """`count` resource requirements: one to three requests and limits each, often the same names."""
    draw = random.Random(seed)
    probes = []
    for _ in range(count):
        pool = CONTAINER_RESOURCES if draw.random() < 0.7 else RESOURCE_NAMES
        names = draw.sample(pool, draw.randint(1, 3))
        probe: dict[str, dict[str, int | str]] = {}
        for field in ("requests", "limits"):
            if draw.random() < 0.8:
                chosen = [n for n in names if draw.random() < 0.7] or names[:1]
                probe[field] = {
                    name: draw.choice(RESOURCE_VALUES[: draw.choice((17, 23, -1))]) for name in chosen
                }
        probes.append(probe or {"limits": {names[0]: draw.choice(RESOURCE_VALUES)}})
    return probes
