#!/usr/bin/env bash
# Make `.venv` a ready virtual environment with the project (editable) and its dev and worker extras.
#
# The environment itself lives outside the checkout, keyed by a hash of the dependency lists and
# constraints.txt, and `.venv` links to it: a fresh clone (as CI makes) reuses an environment with
# the same dependencies instead of reinstalling torch. Only the editable install of this checkout
# is redone, which takes seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3.11}
command -v "$python" >/dev/null || python=python3
"$python" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || {
  echo "ensure-venv: Python 3.11 is required (found $("$python" --version 2>&1))" >&2; exit 1; }

deps_hash=$("$python" - <<'PY'
import hashlib, json, sys, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
digest = hashlib.sha256()
digest.update(json.dumps([project.get("dependencies"), project.get("optional-dependencies"),
                          sys.version], sort_keys=True).encode())
digest.update(open("constraints.txt", "rb").read())
print(digest.hexdigest()[:16])
PY
)
cache_root=${SUSTAINDIFFUSION_VENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sustaindiffusion/venvs}
venv="$cache_root/$deps_hash"

if [ ! -f "$venv/.complete" ]; then
  echo "ensure-venv: creating $venv" >&2
  rm -rf "$venv"
  mkdir -p "$cache_root"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -c constraints.txt -e '.[dev,worker]'
  touch "$venv/.complete"
fi

# Point the shared environment's editable install at this checkout (cheap when it already does).
pth="$venv/lib/python3.11/site-packages/_sustaindiffusion.pth"
if ! grep -qxF "$PWD/operator" "$pth" 2>/dev/null; then
  "$venv/bin/python" -m pip install --quiet --no-deps -c constraints.txt -e .
fi

if [ -L .venv ] || [ ! -e .venv ]; then
  ln -sfn "$venv" .venv
else
  echo "ensure-venv: .venv exists and is not a link; remove it to use the shared environment" >&2
  exit 1
fi
echo "$venv"
