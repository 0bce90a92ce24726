"""A front point's measures as a study's run summary holds them (`local.analysis.RunSummary`), for
the analysis and its outputs."""

from __future__ import annotations


def front_point(quality: float, gender: float, energy: float) -> dict[str, float]:
    return {
        "quality": quality,
        "gender_bias": gender,
        "ethnic_bias": 0.5,
        "cpu_joules_per_image": energy * 0.1,
        "gpu_joules_per_image": energy * 0.9,
        "cpu_kwh_per_image": energy * 0.1 / 3.6e6,
        "gpu_kwh_per_image": energy * 0.9 / 3.6e6,
        "seconds_per_image": energy / 100,
    }


DEFAULTS = front_point(0.6, 1.0, 1000.0)
