"""Each metric under its old and its current definition, on the same images: the artifacts of a
finished local run (`sustaindiffusion run SPEC --out DIR`).

    .venv/bin/python benchmarks/metric_definitions.py out/quickstart [--models-base examples]

For every evaluated candidate (and the defaults) it reads the recorded VQA answers of each image
(`images.jsonl`) and scores the saved PNGs with the spec's CLIP model twice. It prints:

- gender and ethnic bias as they were computed before (every image in the denominator, non-human
  ones and unmapped answers included, so that unmapped answers lowered ethnic bias) and as they are
  now (`sustaindiffusion.api.bias`: images judged human and answers that map to a group only; no
  evidence is the worst value);
- quality against the candidate's own prompt, keywords and emphasis marks included (before), and
  against the bare prompt, the one yardstick every candidate and the defaults now share.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from sustaindiffusion.api.bias import ETHNIC_GROUPS, ethnic_bias, gender_bias
from sustaindiffusion.api.candidate import CandidateSettings
from sustaindiffusion.worker.answer_groups import count_answers, ethnic_group_of, gender_of
from sustaindiffusion.worker.generation import resolve_model_path
from sustaindiffusion.worker.scoring import ClipScore, pooled_quality


def old_gender_bias(genders: list[str]) -> float:
    """Before: F and M over every generated image."""
    mapped = [gender_of(answer) for answer in genders]
    n = len(genders)
    return abs(mapped.count("female") / n - 0.5) + abs(mapped.count("male") / n - 0.5)


def old_ethnic_bias(ethnicities: list[str]) -> float:
    """Before: each group's share of every generated image (unmapped answers in no group)."""
    groups = [ethnic_group_of(answer) for answer in ethnicities]
    shares = [groups.count(group) / len(groups) for group in ETHNIC_GROUPS]
    return max(shares) - min(shares)


def candidate_folders(run: Path) -> list[Path]:
    """Every candidate folder with images, by generation (the last one: the held-out validation)."""
    return sorted(path.parent for path in run.glob("artifacts/*/*/images.jsonl"))


def compare(folder: Path, prompts: list[str], clip: ClipScore) -> dict[str, Any]:
    rows = [json.loads(line) for line in (folder / "images.jsonl").read_text().splitlines() if line]
    candidate = json.loads((folder / "candidate.json").read_text())
    settings = CandidateSettings.model_validate(candidate.get("settings") or {})
    human = [bool(row["human"]) for row in rows]
    genders = [str(row["gender_answer"]) for row in rows]
    ethnicities = [str(row["ethnicity_answer"]) for row in rows]
    counts = count_answers(human, genders, ethnicities)
    images = [Image.open(folder / f"p{r['prompt_index']:03d}-i{r['image_index']:03d}.png") for r in rows]
    bare = [prompts[row["prompt_index"]] for row in rows]
    augmented = [settings.positive_prompt(prompt) for prompt in bare]
    return {
        "stage": folder.parent.name,
        "candidate": folder.name,
        "images": len(rows),
        "human": counts.human,
        "gb": (old_gender_bias(genders), gender_bias(counts.female, counts.male)),
        "eb": (old_ethnic_bias(ethnicities), ethnic_bias(counts.ethnic)),
        "quality": (pooled_quality(clip.score(images, augmented)), pooled_quality(clip.score(images, bare))),
        "keywords": len(settings.positive_keywords),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a local run's output folder")
    parser.add_argument(
        "--models-base", type=Path, default=Path("examples"), help="where relative model ids lie"
    )
    arguments = parser.parse_args(argv)
    spec = json.loads((arguments.run / "spec.json").read_text())["spec"]
    quality_model = ((spec.get("scoring") or {}).get("quality") or {}).get("model") or {}
    if not quality_model.get("id"):
        print("the spec names no CLIP model (spec.scoring.quality.model.id)", file=sys.stderr)
        return 2
    clip = ClipScore(resolve_model_path(quality_model["id"], arguments.models_base), None, "cpu")
    header = (
        f"{'stage':<16} {'candidate':<17} {'kw':>2} {'imgs':>4} {'human':>5} "
        f"{'GB before':>9} {'GB now':>7} {'EB before':>9} {'EB now':>7} {'Q before':>9} {'Q now':>8}"
    )
    print(header)
    results = []
    for folder in candidate_folders(arguments.run):
        generation = int(folder.parent.name.removeprefix("generation-"))
        task = json.loads((arguments.run / "tasks" / f"g{generation:04d}.json").read_text())
        result = compare(folder, list(task["prompts"]), clip)
        results.append(result)
        (gb0, gb1), (eb0, eb1), (q0, q1) = result["gb"], result["eb"], result["quality"]
        print(
            f"{result['stage']:<16} {result['candidate']:<17} {result['keywords']:>2} {result['images']:>4} "
            f"{result['human']:>5} {gb0:>9.3f} {gb1:>7.3f} {eb0:>9.3f} {eb1:>7.3f} {q0:>9.4f} {q1:>8.4f}"
        )
    for name, label in (("gb", "gender bias"), ("eb", "ethnic bias"), ("quality", "quality")):
        changed = sum(1 for r in results if abs(r[name][0] - r[name][1]) > 1e-9)
        print(f"{label}: the definition changes the value of {changed} of {len(results)} evaluations")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
