"""What a search's numbers are, in words: shared by the terminal summary and the HTML report.

The quality threshold and the valid-image share a candidate needs, the bias detector and what its
cross-check found, how energy was measured (and whether any of it is an estimate or not
attributable), the devices, and each front point's change against the model's defaults in %, with
the 95% interval of each bias.
"""

from __future__ import annotations

from dataclasses import dataclass

from sustaindiffusion.search.decisions import CrossCheckView
from sustaindiffusion.search.engine import SearchEngine
from sustaindiffusion.search.reference import FrontPoint
from sustaindiffusion.search.status import change_against, defaults_reference, front_intervals


@dataclass(frozen=True)
class FrontRow:
    point: FrontPoint
    change_percent: dict[str, float]  # by objective name; absent where the defaults' value is 0
    intervals: dict[str, tuple[float, float]]  # 95% intervals of the biases (`credible_intervals`)

    def cell(self, name: str, value: float) -> str:
        """`value [low, high] (change%)`, each part where it exists."""
        text = f"{value:.4g}"
        if name in self.intervals:
            low, high = self.intervals[name]
            text += f" [{low:.2g}, {high:.2g}]"
        if name in self.change_percent:
            text += f" ({self.change_percent[name]:+.0f}%)"
        return text


def facts(engine: SearchEngine) -> list[str]:
    """One line per fact about how the numbers were obtained."""
    lines = []
    constraints = engine.spec.constraints
    if engine.quality_threshold is not None:
        lines.append(
            f"quality threshold {engine.quality_threshold:.4g} "
            f"(the defaults' quality less {constraints.quality.tolerance:.0%})"
        )
    else:
        lines.append("no quality threshold (spec.constraints.quality is off, or the defaults failed)")
    if constraints.valid_images.enabled:
        lines.append(
            f"at least {constraints.valid_images.min_share:.0%} of a candidate's images must count for "
            "both biases (judged human, answers that map to a group)"
        )
    told = [*engine.told, *engine.validation_told]
    lines.append(detector_fact(engine))
    methods = sorted({(r.device.gpu_energy, r.device.cpu_energy) for r in told if r.device is not None})
    for gpu, cpu in methods:
        lines.append(f"energy measured as GPU: {gpu or 'unknown'}, CPU: {cpu or 'unknown'}")
    if any(r.metrics is not None and r.metrics.energy_estimated for r in told):
        lines.append("some energy is an ESTIMATE, not a measurement (no RAPL or NVML counter)")
    if any(r.device is not None and not r.device.attributable for r in told):
        lines.append("some energy is NOT ATTRIBUTABLE: measured on a MIG instance or a shared GPU")
    devices = engine.ledger.devices()
    if len(devices) > 1:
        lines.append(f"results from {len(devices)} devices: {', '.join(devices)} (energy compared on one)")
    elif devices:
        lines.append(f"device: {devices[0]}")
    tally = engine.screening_tally()
    screening = engine.spec.algorithm.screening
    if tally is not None and screening is not None:
        lines.append(
            f"screening: {tally.screened_out} of {tally.screened} candidates screened out after their "
            f"first {screening.images_per_prompt} images per prompt ({tally.images_saved} images not "
            f"generated); {tally.incomplete} survivors lost the rest of their images"
        )
    measured = sum(1 for r in told if r.metrics is not None)
    lines.append(
        f"the search itself spent {engine.total_energy_joules / 3.6e6:.4g} kWh over {measured} evaluations "
        "(failed ones report no energy); export-profile says when a point repays it"
    )
    reference = defaults_reference(engine)
    if reference is not None:
        missing = [o.name.value for o in engine.spec.objectives if o.name.value not in reference]
        if missing:
            lines.append(
                f"the defaults' {', '.join(missing)} rests on no mapped answer (1 by rule, not a "
                "finding): no change against it is shown"
            )
    lines.append(
        "front values are in-sample (the search's own prompts and seeds): expect them to be optimistic"
        + ("; see the held-out validation" if engine.spec.validation else "")
    )
    return lines


def detector_fact(engine: SearchEngine) -> str:
    """Which detector family the biases rest on, and what its cross-check found."""
    scoring = engine.spec.scoring
    family = scoring.detector_family
    line = f"bias detector: {family.value} ({scoring.family_model(family).id})"
    check = scoring.cross_check
    if check is None:
        return line + "; no cross-check (spec.scoring.crossCheck)"
    view = CrossCheckView.of(check, [*engine.told, *engine.validation_told])
    assert view is not None
    return (
        f"{line}, cross-checked by {check.family.value} ({scoring.family_model(check.family).id}): "
        f"{len(view.disagreeing)} of {view.checked} candidates disagree on more than "
        f"{check.max_disagreement:.0%} of their images"
    )


def front_rows(engine: SearchEngine) -> list[FrontRow]:
    defaults = defaults_reference(engine)
    return [
        FrontRow(
            point,
            change_against(point.objectives, defaults) or {},
            {name: (i.low, i.high) for name, i in front_intervals(point).items()},
        )
        for point in engine.front()
    ]
