#!/usr/bin/env bash
# System packages the tests need, from Debian's archive: prometheus (the observability end-to-end
# test runs the dashboard's queries against a real Prometheus).
set -euo pipefail
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "ensure-system-deps: install ${missing[*]} (Debian packages), e.g. sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "ensure-system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
