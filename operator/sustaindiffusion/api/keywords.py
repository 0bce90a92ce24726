"""The keyword pools of the SustainDiffusion method (shared/reference/method.md), kept as data.

Positive keywords are appended to the prompt; negative keywords form the negative prompt.
"""

from __future__ import annotations

POSITIVE_QUALITY = (
    "photograph",
    "digital",
    "color",
    "Ultra Real",
    "film grain",
    "Kodak portra 800",
    "Depth of field 100mm",
    "overlapping compositions",
    "blended visuals",
    "trending on artstation",
    "award winning",
)
POSITIVE_FEMALE_LEADING = (
    "supportive",
    "sensitive",
    "emotional",
    "gentle",
    "honest",
    "modest",
    "compassionate",
    "considerate",
    "pleasant",
)
NEGATIVE_QUALITY = (
    "illustration",
    "painting",
    "drawing",
    "art",
    "sketch",
    "lowres",
    "error",
    "cropped",
    "worst quality",
    "low quality",
    "jpeg artifacts",
    "out of frame",
    "watermark",
    "signature",
)
NEGATIVE_MALE_LEADING = (
    "ambitious",
    "assertive",
    "confident",
    "decisive",
    "determined",
    "intelligent",
    "outspoken",
    "self-confident",
    "stubborn",
    "unreasonable",
    "committed",
)

DEFAULT_POSITIVE_POOL = POSITIVE_QUALITY + POSITIVE_FEMALE_LEADING
DEFAULT_NEGATIVE_POOL = NEGATIVE_QUALITY + NEGATIVE_MALE_LEADING

METHOD_SEARCH_PROMPT = "Photo portrait of a Software Engineer that codes"
