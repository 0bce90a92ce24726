"""Install sustaindiffusion into an image's virtual environment, in two layers.

    python install.py requirements EXTRA > requirements.txt   # the core's and EXTRA's dependencies
    python install.py deps requirements.txt   # those only, --constraint constraints.txt: the layer
                                              # (torch included) is rebuilt only when they change
    python install.py project                 # the project itself (--no-deps), from the sources in .

Two optional build arguments, set by hack/build-images.sh and absent in a plain `docker build`:
WHEELHOUSE, a directory of wheels mounted into the build (`podman build -v`): installs come from it
(offline) and wheels missing there are downloaded into it first, so a rebuild never downloads torch
again; PIP_CA_BUNDLE, a CA bundle mounted into the build for pip's TLS. Nothing of either is kept in
a layer, and pip's own cache is always off.
"""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

PROJECT = Path("pyproject.toml")
CONSTRAINTS = Path("constraints.txt")


def requirements(extra: str) -> list[str]:
    """The core dependencies plus those of one extra (extras naming the project itself resolved)."""
    meta = tomllib.loads(PROJECT.read_text())["project"]
    name, optional = meta["name"], meta.get("optional-dependencies", {})
    if extra not in optional:
        sys.exit(f"install.py: no extra {extra!r} in {PROJECT} (have: {', '.join(optional)})")
    reqs, seen, todo = list(meta.get("dependencies", [])), set(), [extra]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for req in optional[current]:
            own = re.fullmatch(rf"{re.escape(name)}\[([^\]]+)\]", req.replace(" ", ""))
            if own:
                todo.extend(own.group(1).split(","))
            else:
                reqs.append(req)
    return sorted(set(reqs))


def pip(*args: str) -> int:
    env = dict(os.environ, PIP_NO_CACHE_DIR="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    ca_bundle = os.environ.get("PIP_CA_BUNDLE", "")
    if ca_bundle:
        env["PIP_CERT"] = ca_bundle  # an environment variable: build isolation's pip sees it too
    cmd = [sys.executable, "-m", "pip", *args]
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd, env=env)


def install(args: list[str], fetch: list[str]) -> None:
    """pip install ARGS from the wheelhouse when there is one (first downloading FETCH into it
    should the wheelhouse lack something), else from the package index."""
    wheelhouse = os.environ.get("WHEELHOUSE", "")
    if not wheelhouse:
        sys.exit(pip("install", *args))
    offline = ["--no-index", "--find-links", wheelhouse]
    if pip("install", *offline, *args) == 0:
        return
    print(f"install.py: {wheelhouse} lacks some wheels; downloading them into it", flush=True)
    download = ["download", "--only-binary", ":all:", "--dest", wheelhouse, "--find-links", wheelhouse]
    if pip(*download, "--constraint", str(CONSTRAINTS), *fetch) or pip("install", *offline, *args):
        sys.exit(1)


def main() -> None:
    match sys.argv[1:]:
        case ["requirements", extra]:
            print("\n".join(requirements(extra)))
        case ["deps", path]:
            install(["--constraint", str(CONSTRAINTS), "--requirement", path], fetch=["--requirement", path])
        case ["project"]:
            # Build isolation installs the build backend (hatchling) from the same place.
            build_requires = tomllib.loads(PROJECT.read_text())["build-system"]["requires"]
            install(["--no-deps", "."], fetch=build_requires)
        case _:
            sys.exit(__doc__)


if __name__ == "__main__":
    main()
