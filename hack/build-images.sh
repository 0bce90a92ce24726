#!/usr/bin/env bash
# Build the operator and worker images with podman and write them as OCI archives:
#   out/images/operator.tar   out/images/worker.tar
# Usage: hack/build-images.sh [--pull-base] [--compress] [--layout] [operator] [worker]   (default: both)
# The archives' layers are uncompressed (quick to write and to import); --compress (or
# SUSTAINDIFFUSION_IMAGE_COMPRESS=1) gzips them, to ship the archives elsewhere. --layout writes no
# archive and prints each image's place in the cache instead (oci:LAYOUT:TAG; the container suite
# imports from there only the layers containerd lacks).
#
# Names: <repo>/operator:<version> and <repo>/worker:<version>, <version> from pyproject.toml and
# <repo> the fully qualified form of the chart's `sustaindiffusion/...` (values.yaml image.repository,
# worker.image), so that after `ctr -n k8s.io images import` the kubelet finds exactly the images
# the chart names. Each image is also tagged with its input hash.
#
# Base image: by default an offline one, localhost/sustaindiffusion/python-base:bookworm, built once
# with mmdebstrap from the host's apt sources (Debian bookworm minbase + python3, python3-venv,
# ca-certificates) and kept; with --pull-base (or SUSTAINDIFFUSION_PULL_BASE=1) the official
# python:3.11-slim-bookworm image, pulled. SUSTAINDIFFUSION_PYTHON_BASE names any other base.
#
# Caching: each image's layers live in one OCI layout directory in the cache (blobs stored once by
# digest), tagged with a hash of everything that goes into the image (Dockerfile, pyproject.toml,
# constraints.txt, README.md, the sources, images/install.py, .dockerignore, the base image's id,
# this script). With unchanged inputs nothing is built or written. A changed input rebuilds from
# its layer on (podman's layer cache keeps the dependency layer, torch, unless pyproject.toml's
# dependencies or constraints.txt change), and only the new layers are added to the layout, so a
# README or source edit writes megabytes, not the worker's 5.8 GB. The layout keeps the last two
# tags. Wheels come from a wheelhouse outside the repository, mounted into the build, so torch is
# downloaded once, ever. With $SUSTAINDIFFUSION_TIMINGS set, each step's seconds are appended to it.
#
# Environment: SUSTAINDIFFUSION_IMAGE_CACHE (archives; default ~/.cache/sustaindiffusion/images),
# SUSTAINDIFFUSION_WHEELHOUSE (default ~/.cache/sustaindiffusion/wheels), SUSTAINDIFFUSION_CA_BUNDLE
# (CA bundle pip trusts in the build; default $PIP_CERT, else the host's bundle),
# SUSTAINDIFFUSION_IMAGE_REPO (default docker.io/sustaindiffusion), SUSTAINDIFFUSION_PODMAN_ULIMITS,
# SUSTAINDIFFUSION_PODMAN_RUNTIME (OCI runtime; default runc when installed, else podman's).
# Prints name=archive (or name=oci:LAYOUT:TAG) for each image as its last lines; logs go to stderr.
set -euo pipefail

cd "$(dirname "$0")/.."
script=hack/build-images.sh
start=$(date +%s)

log() { printf '[build-images +%ss] %s\n' "$(($(date +%s) - start))" "$*" >&2; }
die() { printf 'build-images: %s\n' "$*" >&2; exit 1; }

pull_base=${SUSTAINDIFFUSION_PULL_BASE:-0}
compress=${SUSTAINDIFFUSION_IMAGE_COMPRESS:-0}
layout_only=0
names=()
for arg in "$@"; do
  case $arg in
    --pull-base) pull_base=1 ;;
    --compress) compress=1 ;;
    --layout) layout_only=1 ;;
    operator | worker) names+=("$arg") ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$script"; exit 0 ;;
    *) die "unknown argument '$arg' (expected operator, worker, --pull-base, --compress or --layout)" ;;
  esac
done
[ ${#names[@]} -gt 0 ] || names=(operator worker)

command -v podman >/dev/null ||
  die "podman is missing: install the Debian packages podman and mmdebstrap (apt-get install podman mmdebstrap)"
command -v python3 >/dev/null || die "python3 (3.11 or later, for tomllib) is missing"

version=$(python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
repo=${SUSTAINDIFFUSION_IMAGE_REPO:-docker.io/sustaindiffusion}
cache=${SUSTAINDIFFUSION_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sustaindiffusion/images}
wheelhouse=${SUSTAINDIFFUSION_WHEELHOUSE:-${XDG_CACHE_HOME:-$HOME/.cache}/sustaindiffusion/wheels}
ca_bundle=${SUSTAINDIFFUSION_CA_BUNDLE:-${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}}
# Rootful podman refuses containers whose open-files and process limits exceed the host's.
read -r -a ulimits <<<"${SUSTAINDIFFUSION_PODMAN_ULIMITS:---ulimit nofile=1024:1024 --ulimit nproc=1024:1024}"
# runc when installed: crun (Debian's default) refuses hosts with hybrid cgroups (v1 plus a v2 mount).
runtime=${SUSTAINDIFFUSION_PODMAN_RUNTIME:-$(command -v runc || true)}
podman() { command podman ${runtime:+--runtime "$runtime"} "$@"; }
mkdir -p "$cache" "$wheelhouse" out/images
# One build at a time per cache (a test suite and a developer may both call this script).
exec 9>"$cache/.lock"
flock -n 9 || { log "waiting for another build-images.sh to finish"; flock 9; }

# The base image: its reference in $base, its id in $base_id.
offline_base=localhost/sustaindiffusion/python-base:bookworm
if [ -n "${SUSTAINDIFFUSION_PYTHON_BASE:-}" ]; then
  base=$SUSTAINDIFFUSION_PYTHON_BASE
elif [ "$pull_base" = 1 ]; then
  base=docker.io/library/python:3.11-slim-bookworm
else
  base=$offline_base
fi
if [ "$pull_base" = 1 ]; then
  log "pulling $base"
  podman pull "$base" >&2 || die "cannot pull $base; without --pull-base an offline base is built instead"
elif [ "$base" = "$offline_base" ] && ! podman image exists "$base"; then
  command -v mmdebstrap >/dev/null || die "mmdebstrap is missing: apt-get install mmdebstrap (or use --pull-base)"
  log "building $base with mmdebstrap (host's apt sources)"
  rootfs=$(mktemp -d)
  trap 'rm -rf "$rootfs"' EXIT
  mmdebstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    bookworm "$rootfs/rootfs.tar" >&2
  podman import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    "$rootfs/rootfs.tar" "$base" >&2
  rm -rf "$rootfs"
  log "built $base"
  if [ -n "${SUSTAINDIFFUSION_TIMINGS:-}" ]; then printf 'image: base\t%s\n' $(($(date +%s) - start)) >>"$SUSTAINDIFFUSION_TIMINGS"; fi
elif ! podman image exists "$base"; then
  die "base image $base not found locally (use --pull-base to pull it)"
fi
base_id=$(podman image inspect --format '{{.Id}}' "$base")
log "base $base ($base_id)"

# A hash over every input of image $1.
input_hash() {
  {
    printf 'base %s\nname %s/%s:%s\ncompress %s\n' "$base_id" "$repo" "$1" "$version" "$compress"
    sha256sum "images/$1/Dockerfile" images/install.py pyproject.toml constraints.txt README.md \
      .dockerignore "$script"
    find operator worker -type f ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
}

# Link (or copy) $1 to $2.
place() { ln -f "$1" "$2" 2>/dev/null || cp -f "$1" "$2"; }

# Mounted for the RUN steps only, onto paths every base has (/mnt, the system CA bundle), so that
# no mount point is left behind in a layer.
build_args=(--build-arg "PYTHON_BASE=$base" --build-arg WHEELHOUSE=/mnt -v "$wheelhouse:/mnt:rw")
if [ -f "$ca_bundle" ]; then
  ca_in_build=/etc/ssl/certs/ca-certificates.crt
  build_args+=(--build-arg "PIP_CA_BUNDLE=$ca_in_build" -v "$ca_bundle:$ca_in_build:ro")
fi

# Whether the image cache $1 (an OCI layout) holds the tag $2.
layout_has() { [ -f "$1/index.json" ] && grep -q "\"$2\"" "$1/index.json"; }
timing() { # timing PHASE SECONDS: for the timing table of `make test`
  if [ -n "${SUSTAINDIFFUSION_TIMINGS:-}" ]; then printf 'image: %s\t%s\n' "$1" "$2" >>"$SUSTAINDIFFUSION_TIMINGS"; fi
}

results=()
for name in "${names[@]}"; do
  hash=$(input_hash "$name")
  layout=$cache/$name.oci
  if layout_has "$layout" "$hash"; then
    log "$name: inputs unchanged ($hash)"
  else
    t0=$(date +%s)
    log "$name: building $repo/$name:$version ($hash)"
    podman build "${ulimits[@]}" --network host --layers --pull=missing \
      -f "images/$name/Dockerfile" "${build_args[@]}" \
      -t "$repo/$name:$version" -t "$repo/$name:$hash" . >&2
    t1=$(date +%s)
    log "$name: built in $((t1 - t0))s; adding its new layers to $layout"
    timing "$name build" $((t1 - t0))
    # Layers the layout holds already (the dependency layers, when only the project changed) are
    # not written again: blobs are stored by digest.
    skopeo copy --quiet --dest-oci-accept-uncompressed-layers \
      "containers-storage:$repo/$name:$hash" "oci:$layout:$hash" >&2
    python3 hack/oci_layout.py prune "$layout" --keep 2
    for old in $(podman images --format '{{.Tag}}' "$repo/$name" | grep -E '^[0-9a-f]{16}$' || true); do
      layout_has "$layout" "$old" || podman rmi "$repo/$name:$old" >/dev/null 2>&1 || true
    done
    log "$name: layers stored in $(($(date +%s) - t1))s"
    timing "$name layers" $(($(date +%s) - t1))
  fi
  if [ "$layout_only" = 1 ]; then
    results+=("$name=oci:$layout:$hash")
    continue
  fi
  archive=$cache/$name-$hash.tar
  if [ ! -f "$archive" ]; then
    t1=$(date +%s)
    if [ "$compress" = 1 ]; then
      rm -f "$archive.tmp"
      podman save --format oci-archive -o "$archive.tmp" "$repo/$name:$hash" >&2
      mv -f "$archive.tmp" "$archive"
    else
      python3 hack/oci_layout.py archive "$layout" "$hash" "$archive" --name "$repo/$name:$version"
    fi
    # One archive per image is kept: the layout holds the previous image's layers anyway.
    find "$cache" -maxdepth 1 -name "$name-*.tar" ! -name "$name-$hash.tar" -delete
    log "$name: archive written in $(($(date +%s) - t1))s: $(du -h "$archive" | cut -f1)"
    timing "$name archive" $(($(date +%s) - t1))
  fi
  place "$archive" "out/images/$name.tar"
  results+=("$name=$PWD/out/images/$name.tar")
done

log "done"
printf '%s\n' "${results[@]}"
