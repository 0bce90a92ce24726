#!/usr/bin/env bash
# Build the test environment's binaries from Go modules into a cache outside the repository, keyed
# by version. Components (default: all, the longest build first):
#   control-plane  etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
#   kubelet        the real node of the container suite
#   kueue          Kueue's controller manager, with the CRDs and webhook manifests of the same module
#   helm           the chart tests' installer
# A binary already in the cache is reused; nothing is rebuilt unless it is missing. The Kubernetes
# binaries of a component come from one `go build` (shared packages compile once, links overlap).
# Prints the directory with links to every binary built so far as its last line (`--print-dir`:
# builds nothing, only prints it). With
# $SUSTAINDIFFUSION_TIMINGS set, appends "phase<TAB>seconds" for each build to that file.
#
# The Kubernetes version is versions.env's KUBERNETES_VERSION (what `make test` runs on), or
# $SUSTAINDIFFUSION_KUBERNETES_VERSION when set: one of KUBERNETES_SUPPORTED, built into the same
# cache beside the others (`make test-k8s K8S=v1.37.2`). etcd, Kueue and helm stay as pinned.
#
# Why a wrapper module: `go install pkg@version` refuses modules whose go.mod has replace
# directives (k8s.io/kubernetes replaces its staging modules with local paths; etcd's server
# module replaces its siblings). A throw-away module that requires k8s.io/kubernetes and maps
# each staging module to its published v0.<minor>.<patch> tag builds the real commands.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
if [ -n "${SUSTAINDIFFUSION_KUBERNETES_VERSION:-}" ]; then
  case " $KUBERNETES_SUPPORTED " in
    *" $SUSTAINDIFFUSION_KUBERNETES_VERSION "*) KUBERNETES_VERSION=$SUSTAINDIFFUSION_KUBERNETES_VERSION ;;
    *)
      echo "build-binaries: Kubernetes $SUSTAINDIFFUSION_KUBERNETES_VERSION is not supported" \
        "(supported: $KUBERNETES_SUPPORTED; hack/versions.env)" >&2
      exit 2
      ;;
  esac
fi

cache_root=${SUSTAINDIFFUSION_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sustaindiffusion/bin}
k8s_dir="$cache_root/kubernetes-$KUBERNETES_VERSION"
etcd_dir="$cache_root/etcd-$ETCD_VERSION"
helm_dir="$cache_root/helm-$HELM_VERSION"
kueue_dir="$cache_root/kueue-$KUEUE_VERSION"
out_dir="$cache_root/current-$KUBERNETES_VERSION-$ETCD_VERSION-$HELM_VERSION-$KUEUE_VERSION"
mkdir -p "$k8s_dir" "$etcd_dir" "$helm_dir" "$kueue_dir" "$out_dir"

log() { printf '[build-binaries] %s\n' "$*" >&2; }
timed() { # timed PHASE SECONDS: log it, and record it for the timing table
  log "built $1 in $2 s"
  if [ -n "${SUSTAINDIFFUSION_TIMINGS:-}" ]; then printf 'go: %s\t%s\n' "$1" "$2" >>"$SUSTAINDIFFUSION_TIMINGS"; fi
}
export GOFLAGS="${GOFLAGS:--buildvcs=false} -trimpath"
# Two cores: keep peak memory of the linker in check.
export GOMAXPROCS=${GOMAXPROCS:-2}
ldflags="-s -w"

components=("$@")
if [ "${1:-}" = --print-dir ]; then
  components=() # build nothing: link what is built, print the directory
elif [ ${#components[@]} -eq 0 ]; then
  components=(control-plane kubelet kueue helm)
fi
for c in "${components[@]+"${components[@]}"}"; do
  case $c in
    control-plane | kubelet | kueue | helm) ;;
    *) echo "build-binaries: unknown component '$c' (expected control-plane, kubelet, kueue or helm)" >&2; exit 2 ;;
  esac
done

# lock DIR: one build into DIR at a time (two would compile the same packages twice); another
# waits. Per directory, so that a build of another Kubernetes version (`make test-k8s`) does not
# hold up a `make test` whose binaries are cached. Taking the next lock releases the last.
lock() {
  exec 9>"$1/.lock"
  flock -n 9 || { log "waiting for another build into $1"; flock 9; }
}

# build_kubernetes NAME...: the missing ones of these k8s.io/kubernetes commands, in one `go build`.
build_kubernetes() {
  lock "$k8s_dir"
  local missing=()
  for b in "$@"; do [ -x "$k8s_dir/$b" ] || missing+=("$b"); done
  [ ${#missing[@]} -eq 0 ] && { log "kubernetes $KUBERNETES_VERSION: $* cached"; return; }
  log "kubernetes $KUBERNETES_VERSION: building ${missing[*]}"
  local work; work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  local minor_patch=${KUBERNETES_VERSION#v1.}
  local staging_tag="v0.$minor_patch"
  # Read the list of staging modules from the real go.mod of the pinned release.
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  local staging
  staging=$(awk '/^replace \(/{r=1;next} r&&/^\)/{r=0} r&&$1 ~ /^k8s.io\// && $3 ~ /^\.\/staging/ {print $1}
                 /^replace k8s.io\/.* => \.\/staging/ {print $2}' "$gomod" | sort -u)
  [ -n "$staging" ] || { log "no staging replaces found in $gomod"; exit 1; }
  {
    echo "module sustaindiffusion.local/k8sbuild"
    echo
    echo "go 1.26"
    echo
    echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
    echo
    for m in $staging; do echo "replace $m => $m $staging_tag"; done
  } > "$work/go.mod"
  {
    echo "//go:build tools"
    echo
    echo "package tools"
    echo
    echo "import ("
    for b in "${missing[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$b\""; done
    echo ")"
  } > "$work/tools.go"
  (cd "$work" && go mod tidy >&2)
  local t0=$SECONDS packages=()
  for b in "${missing[@]}"; do packages+=("k8s.io/kubernetes/cmd/$b"); done
  mkdir -p "$work/out"
  (cd "$work" && go build -ldflags "$ldflags \
    -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION \
    -X k8s.io/component-base/version.gitMajor=1 \
    -X k8s.io/component-base/version.gitMinor=${minor_patch%%.*} \
    -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION" \
    -o "$work/out/" "${packages[@]}")
  for b in "${missing[@]}"; do mv "$work/out/$b" "$k8s_dir/$b"; done
  timed "${missing[*]}" $((SECONDS - t0))
}

build_etcd() {
  lock "$etcd_dir"
  [ -x "$etcd_dir/etcd" ] && { log "etcd $ETCD_VERSION: cached"; return; }
  log "etcd $ETCD_VERSION: building"
  local work; work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  printf 'module sustaindiffusion.local/etcdbuild\n\ngo 1.26\n\nrequire go.etcd.io/etcd/server/v3 %s\n' "$ETCD_VERSION" > "$work/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "go.etcd.io/etcd/server/v3"\n' > "$work/tools.go"
  (cd "$work" && go mod tidy >&2)
  local t0=$SECONDS
  (cd "$work" && go build -ldflags "$ldflags" -o "$etcd_dir/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$etcd_dir/etcd.tmp" "$etcd_dir/etcd"
  timed etcd $((SECONDS - t0))
}

build_helm() {
  lock "$helm_dir"
  [ -x "$helm_dir/helm" ] && { log "helm $HELM_VERSION: cached"; return; }
  log "helm $HELM_VERSION: building"
  local t0=$SECONDS
  GOBIN="$helm_dir" go install -ldflags "$ldflags -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  timed helm $((SECONDS - t0))
}

# Kueue's go.mod has no replace directives, so `go install` builds it as released. Its CRDs and
# webhook manifests come from the same module version (the tests point them at a loopback URL).
build_kueue() {
  lock "$kueue_dir"
  [ -x "$kueue_dir/kueue" ] && [ -f "$kueue_dir/manifests/webhooks.yaml" ] && { log "kueue $KUEUE_VERSION: cached"; return; }
  log "kueue $KUEUE_VERSION: building"
  local t0=$SECONDS
  GOBIN="$kueue_dir" go install -ldflags "$ldflags \
    -X sigs.k8s.io/kueue/pkg/version.GitVersion=$KUEUE_VERSION" "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION"
  local source
  source=$(go mod download -json "sigs.k8s.io/kueue@$KUEUE_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  rm -rf "$kueue_dir/manifests.tmp" && mkdir -p "$kueue_dir/manifests.tmp/crds"
  cp "$source"/config/components/crd/bases/*.yaml "$kueue_dir/manifests.tmp/crds/"
  cp "$source/config/components/webhook/manifests.yaml" "$kueue_dir/manifests.tmp/webhooks.yaml"
  rm -rf "$kueue_dir/manifests" && mv "$kueue_dir/manifests.tmp" "$kueue_dir/manifests"
  timed kueue $((SECONDS - t0))
}

for c in "${components[@]+"${components[@]}"}"; do
  case $c in
    control-plane)
      build_kubernetes kube-apiserver kube-controller-manager kube-scheduler kubectl
      build_etcd
      ;;
    kubelet) build_kubernetes kubelet ;;
    kueue) build_kueue ;;
    helm) build_helm ;;
  esac
done

link() { [ -x "$1" ] && ln -sf "$1" "$out_dir/$(basename "$1")"; return 0; }
for b in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet; do link "$k8s_dir/$b"; done
link "$etcd_dir/etcd"
link "$helm_dir/helm"
link "$kueue_dir/kueue"
[ -d "$kueue_dir/manifests" ] && ln -sfn "$kueue_dir/manifests" "$out_dir/kueue-manifests"
echo "$out_dir"
