#!/usr/bin/env bash
# System packages the tests need, from Debian's archive: prometheus (the observability end-to-end
# test runs the dashboard's queries against a real Prometheus); podman and mmdebstrap (the images
# are built offline by hack/build-images.sh); containerd, runc, the CNI plugins and iptables (the
# container end-to-end suite runs a real kubelet whose pods are containers); chromium, its
# chromedriver and a font (the audit suite drives the labelling page in a real headless browser
# through Selenium, with Debian's driver: nothing is downloaded at test time).
set -euo pipefail
missing=()
need() { # need COMMAND-OR-PATH PACKAGE
  if [[ $1 == /* ]]; then [ -e "$1" ] && return; else command -v "$1" >/dev/null && return; fi
  missing+=("$2")
}
need prometheus prometheus
need podman podman
need mmdebstrap mmdebstrap
need containerd containerd
need runc runc
need /usr/lib/cni/bridge containernetworking-plugins
need iptables iptables
need skopeo skopeo
need chromium chromium
need chromedriver chromium-driver
need /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf fonts-dejavu-core
[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" != 0 ]; then
  echo "ensure-system-deps: install ${missing[*]} (Debian packages), e.g. sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "ensure-system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
