"""A stratified sample of each point's saved images, by the detector's answers.

Within each point (a front point or the defaults), the images fall into strata by what the
detector said (`source.SavedImage.stratum`: the person gate, then the gender and ethnicity answers);
up to `per_stratum` images are drawn from each stratum without replacement, so a rare answer (an
image the detector called arab, or not a person) is audited as often as a common one. The
stratum's size in the point's images is kept with the sample: the estimates weight each audited
image by it (`correction`). Deterministic given the seed: each stratum's draw is seeded by the seed,
the point and the stratum, and the labelling order by the seed alone.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sustaindiffusion.audit.source import PointImages, SavedImage

DEFAULT_PER_STRATUM = 10


@dataclass(frozen=True)
class Drawn:
    item_id: str
    image: SavedImage
    role: str


@dataclass(frozen=True)
class Sample:
    items: tuple[Drawn, ...]  # in labelling order (shuffled, so the order tells nothing)
    strata: dict[str, dict[str, int]]  # per candidate: each stratum's size among its images
    roles: dict[str, str]  # per candidate: its role


def draw(points: Sequence[PointImages], per_stratum: int, seed: int) -> Sample:
    if per_stratum < 1:
        raise ValueError(f"per_stratum must be at least 1, got {per_stratum}")
    chosen: list[tuple[SavedImage, str]] = []
    strata: dict[str, dict[str, int]] = {}
    roles: dict[str, str] = {}
    for point in points:
        candidate = point.point.candidate_id
        by_stratum: dict[str, list[SavedImage]] = defaultdict(list)
        for image in point.images:
            by_stratum[image.stratum].append(image)
        strata[candidate] = {name: len(images) for name, images in sorted(by_stratum.items())}
        roles[candidate] = point.point.role
        for name, images in sorted(by_stratum.items()):
            generator = random.Random(f"{seed}:{candidate}:{name}")
            count = min(per_stratum, len(images))
            chosen.extend((image, point.point.role) for image in generator.sample(images, count))
    random.Random(f"{seed}:order").shuffle(chosen)
    width = max(4, len(str(len(chosen))))
    items = tuple(
        Drawn(f"img-{number:0{width}d}", image, role) for number, (image, role) in enumerate(chosen, 1)
    )
    return Sample(items, strata, roles)
