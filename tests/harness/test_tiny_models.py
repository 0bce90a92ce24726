"""The harness, not the product: the tiny models (`tests/support/tiny.py`) are mounted into the
worker image, which runs as uid 1000, not as their owner, so every file must be readable by others."""

from __future__ import annotations

import stat

from tests.support.tiny import ensure_tiny_models


def test_every_tiny_model_file_is_readable_by_other_users() -> None:
    tiny_models = ensure_tiny_models()
    unreadable = []
    for path in tiny_models.rglob("*"):
        mode = path.stat().st_mode
        needed = stat.S_IROTH | (stat.S_IXOTH if path.is_dir() else 0)
        if mode & needed != needed:
            unreadable.append(f"{path.relative_to(tiny_models)} ({stat.filemode(mode)})")
    assert not unreadable, f"not readable by other users: {unreadable[:10]}"
