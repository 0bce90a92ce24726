#!/usr/bin/env bash
# Fail when a control-plane binary or a test-kubelet pod process outlived the test run.
set -euo pipefail
cache_root=${SUSTAINDIFFUSION_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sustaindiffusion/bin}
leftovers=$(pgrep -af -- "$cache_root/" || true)
if [ -n "$leftovers" ]; then
  echo "processes left running after the tests:" >&2
  echo "$leftovers" >&2
  exit 1
fi
echo "no control-plane process left running"
