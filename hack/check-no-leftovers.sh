#!/usr/bin/env bash
# Fail when a control-plane binary, a test-kubelet pod process or the container node's containerd
# (or a container of it) outlived the test run.
set -euo pipefail
cache_root=${SUSTAINDIFFUSION_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sustaindiffusion/bin}
leftovers=$(pgrep -af -- "$cache_root/" || true)
# The container node's containerd and its shims run from Debian's binaries, with the node's directory.
leftovers+=$(pgrep -af -- "sd-container-node-" || true)
if [ -n "$leftovers" ]; then
  echo "processes left running after the tests:" >&2
  echo "$leftovers" >&2
  exit 1
fi
echo "no control-plane process left running"
