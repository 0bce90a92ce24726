"""The SustainDiffusion paper's headline table, as data, for `analyze --compare-paper`.

d'Aloisio, Fadahunsi, Choy, Moussa, Sarro, "SustainDiffusion" (arXiv 2507.15663, ICSE 2026): SD3
medium, search prompt "Photo portrait of a Software Engineer that codes", means over all Pareto
solutions of 10 runs; energy in kWh per image, time in seconds per image. Keys are the arm names
of `examples/paper/` (the defaults row is `defaults`); the project's `recommended` arm has no row.
The paper's ethnic bias is its normalised value and its defaults ran at 1024x1024: see
docs/fidelity.md before reading a difference as a failure to reproduce.

`not_comparable` says, per measure, where the study's statistic is not the paper's, so that
`analyze --compare-paper` shows the reason instead of two numbers side by side (docs/fidelity.md
has each difference and the file that implements it).
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


# Where this implementation measures something else than the paper did, whatever the arm.
_NOT_COMPARABLE = {
    "quality": "another measure: DetectorConfidence runs hustvl/yolos-tiny (DETR-style, 100 queries, no "
    "NMS; the mean confidence of boxes >= 0.25) where the research code ran YOLOv8n, and ClipScore is "
    "not a detector at all; not on the paper's scale",
    "ethnic_bias": "another formula: max minus min share over the answers that map to a group; the "
    "paper's column is its normalised value over all images",
    "cpu_kwh_per_image": "another generation: up to 8 images per pipeline call, the full SD3 pipeline "
    "in bf16 on one GPU; the paper generated without T5, with CPU offload, and its CPU energy was "
    "sometimes a constant fallback",
    "gpu_kwh_per_image": "another generation: up to 8 images per pipeline call, the full SD3 pipeline "
    "in bf16 on one GPU, where the paper ran fp16 without T5 and with CPU offload",
    "seconds_per_image": "another generation: up to 8 images per pipeline call, no CPU offload, T5 included",
}


def not_comparable(arm: str, measure: str) -> str | None:
    """Why the study's `measure` (of any arm) cannot sit beside the paper's, or None where it can.
    Gender bias can: the paper's formula, over the images whose answer maps to a gender (the
    paper's over all images: the same where every answer maps, and `constraints.validImages` keeps
    that share at 80% or more)."""
    return _NOT_COMPARABLE.get(measure)
