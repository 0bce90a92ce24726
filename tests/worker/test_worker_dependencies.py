"""The worker runs from its image, which has the `worker` extra and the core dependencies only
(pyproject.toml): what it imports must not need the operator's or the report's packages. The
container suite shows this for a whole run; this catches it in seconds."""

from __future__ import annotations

import subprocess
import sys

NOT_IN_THE_WORKER_IMAGE = ("scipy", "pymoo", "kopf", "kubernetes", "pandas", "pyarrow", "matplotlib")


def test_the_worker_imports_nothing_its_image_lacks() -> None:
    blocked = "; ".join(f"sys.modules[{name!r}] = None" for name in NOT_IN_THE_WORKER_IMAGE)
    program = (
        f"import sys; {blocked}; "
        "import sustaindiffusion.worker.cli, sustaindiffusion.worker.evaluate, "
        "sustaindiffusion.worker.scoring, sustaindiffusion.worker.detectors"
    )
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
