"""The SustainDiffusion paper's headline table, as data, for `analyze --compare-paper`.

d'Aloisio, Fadahunsi, Choy, Moussa, Sarro, "SustainDiffusion" (arXiv 2507.15663, ICSE 2026): SD3
medium, search prompt "Photo portrait of a Software Engineer that codes", means over all Pareto
solutions of 10 runs; energy in kWh per image, time in seconds per image. Keys are the arm names
of `examples/paper/` (the defaults row is `defaults`); the project's `recommended` arm has no row.
The paper's ethnic bias is its normalised value and its defaults ran at 1024x1024: see
docs/fidelity.md before reading a difference as a failure to reproduce.
"""

from __future__ import annotations

PAPER_MEASURES = (
    "quality",
    "gender_bias",
    "ethnic_bias",
    "cpu_kwh_per_image",
    "gpu_kwh_per_image",
    "seconds_per_image",
)

PAPER_TABLE: dict[str, tuple[float, float, float, float, float, float]] = {
    # arm: (quality, gender bias, ethnic bias, CPU kWh, GPU kWh, s/image)
    "defaults": (0.64, 1.00, 0.76, 0.00020, 0.0019, 34.0),
    "rs": (0.67, 0.61, 0.62, 0.00054, 0.0023, 41.0),
    "npe": (0.77, 0.97, 0.34, 0.00035, 0.00096, 27.0),
    "q": (0.81, 0.70, 0.38, 0.00037, 0.0010, 28.0),
    "q-b": (0.68, 0.37, 0.28, 0.00037, 0.0011, 30.0),
    "q-e": (0.71, 0.52, 0.53, 0.00012, 0.00070, 20.0),
    "sustaindiffusion": (0.69, 0.32, 0.31, 0.00015, 0.00094, 25.0),
}


def paper_value(arm: str, measure: str) -> float | None:
    row = PAPER_TABLE.get(arm)
    return row[PAPER_MEASURES.index(measure)] if row is not None and measure in PAPER_MEASURES else None
