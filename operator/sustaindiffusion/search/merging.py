"""One candidate's metrics over the images of two parts (a screening pass and its rest, or an
estimate and the images more evidence added): counts (the cross-check's agreements too), joules,
images, regenerations and quality scores add; each objective is merged as its registry row says
(`api.statistics`); the spread of quality is pooled over the scores (exactly: the population SD of
both parts' scores), the standard error of energy across prompts by images.
"""

from __future__ import annotations

import math

from sustaindiffusion.api.bias import ETHNIC_GROUPS
from sustaindiffusion.api.objectives import OBJECTIVES
from sustaindiffusion.api.results import CROSS_CHECK_FIELDS, Metrics

_COUNT_FIELDS = ("human_images", "female_images", "male_images", *(f"{g}_images" for g in ETHNIC_GROUPS))


def merged(first: Metrics, rest: Metrics) -> Metrics:
    """The metrics of both parts' images (a part without images changes nothing)."""
    n1, n2 = first.images, rest.images
    n = n1 + n2
    if n1 == 0 or n2 == 0:
        return first if n2 == 0 else rest
    update: dict[str, object] = {
        info.metric: info.merge(first, rest, info.metric) for info in OBJECTIVES.values()
    }
    s1, s2 = first.scores, rest.scores
    stddev = None
    if first.quality_stddev is not None and rest.quality_stddev is not None and s1 + s2:
        quality = (s1 * first.quality + s2 * rest.quality) / (s1 + s2)  # uncapped: the spread is around it
        variance = (
            s1 * (first.quality_stddev**2 + (first.quality - quality) ** 2)
            + s2 * (rest.quality_stddev**2 + (rest.quality - quality) ** 2)
        ) / (s1 + s2)
        stddev = math.sqrt(max(variance, 0.0))
    elif first.quality_stddev is not None and rest.quality_stddev is not None:
        stddev = 0.0
    stderr = None
    if first.energy_stderr is not None and rest.energy_stderr is not None:
        stderr = math.hypot(n1 * first.energy_stderr, n2 * rest.energy_stderr) / n
    update |= {
        "quality_stddev": stddev,
        "energy_stderr": stderr,
        "gpu_joules": first.gpu_joules + rest.gpu_joules,
        "cpu_joules": first.cpu_joules + rest.cpu_joules,
        "energy_estimated": first.energy_estimated or rest.energy_estimated,
        "images": n,
        "regenerated_images": _sum(first.regenerated_images, rest.regenerated_images),
        "quality_scores": _sum(first.quality_scores, rest.quality_scores),
        # The cross-check's agreement counts add like the answer counts (known only if both parts have them).
        **{name: _sum(getattr(first, name), getattr(rest, name)) for name in CROSS_CHECK_FIELDS},
    }
    if first.counted and rest.counted:
        update |= {
            name: int(getattr(first, name) or 0) + int(getattr(rest, name) or 0) for name in _COUNT_FIELDS
        }
    else:
        update |= {name: None for name in _COUNT_FIELDS}
    return first.model_copy(update=update)


def _sum(first: int | None, rest: int | None) -> int | None:
    """Both parts' counts added; unknown (None) unless both recorded them."""
    return None if first is None or rest is None else first + rest
