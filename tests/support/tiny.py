"""The tiny random-weight models, built once per builder version into a cache outside the repo."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILDERS = REPO_ROOT / "worker" / "sustaindiffusion" / "worker"  # tiny_*.py: the builders' source


def tiny_models_dir() -> Path:
    """Where the tiny models live: $SUSTAINDIFFUSION_TINY_MODELS, or a cache keyed by the builder's source."""
    configured = os.environ.get("SUSTAINDIFFUSION_TINY_MODELS")
    if configured:
        return Path(configured)
    sources = sorted(BUILDERS.glob("tiny_*.py"))
    digest = hashlib.sha256(b"".join(source.read_bytes() for source in sources)).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "sustaindiffusion" / "tiny-models" / digest


def ensure_tiny_models() -> Path:
    """The tiny models, one pipeline per model family included."""
    from sustaindiffusion.worker.tiny_models import (  # noqa: PLC0415 - needs torch
        TINY_FAMILY_NAMES,
        TINY_MODEL_NAMES,
        build_tiny_models,
    )

    directory = tiny_models_dir()
    build_tiny_models(directory, TINY_MODEL_NAMES + TINY_FAMILY_NAMES)
    return directory
