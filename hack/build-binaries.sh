#!/usr/bin/env bash
# Build the control-plane binaries from Go modules into a cache outside the repository,
# keyed by version: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet
# (the container end-to-end test runs a real node), kwok, helm,
# and Kueue's controller manager with the CRDs and webhook manifests of the same module version.
# A binary already in the cache is reused; nothing is rebuilt unless it is missing.
# Prints the cache directory (the one with the binaries) as its last line.
#
# Why a wrapper module: `go install pkg@version` refuses modules whose go.mod has replace
# directives (k8s.io/kubernetes replaces its staging modules with local paths; etcd's server
# module replaces its siblings). A throw-away module that requires k8s.io/kubernetes and maps
# each staging module to its published v0.<minor>.<patch> tag builds the real commands.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache_root=${SUSTAINDIFFUSION_BIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sustaindiffusion/bin}
k8s_dir="$cache_root/kubernetes-$KUBERNETES_VERSION"
etcd_dir="$cache_root/etcd-$ETCD_VERSION"
kwok_dir="$cache_root/kwok-$KWOK_VERSION"
helm_dir="$cache_root/helm-$HELM_VERSION"
kueue_dir="$cache_root/kueue-$KUEUE_VERSION"
out_dir="$cache_root/current-$KUBERNETES_VERSION-$ETCD_VERSION-$KWOK_VERSION-$HELM_VERSION-$KUEUE_VERSION"
mkdir -p "$k8s_dir" "$etcd_dir" "$kwok_dir" "$helm_dir" "$kueue_dir" "$out_dir"

log() { printf '[build-binaries] %s\n' "$*" >&2; }
export GOFLAGS="${GOFLAGS:--buildvcs=false} -trimpath"
# Two cores: keep peak memory of the linker in check.
export GOMAXPROCS=${GOMAXPROCS:-2}
ldflags="-s -w"

build_kubernetes() {
  local want=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet) missing=()
  for b in "${want[@]}"; do [ -x "$k8s_dir/$b" ] || missing+=("$b"); done
  [ ${#missing[@]} -eq 0 ] && { log "kubernetes $KUBERNETES_VERSION: cached"; return; }
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
  for b in "${missing[@]}"; do
    local t0=$SECONDS
    (cd "$work" && go build -ldflags "$ldflags \
      -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION \
      -X k8s.io/component-base/version.gitMajor=1 \
      -X k8s.io/component-base/version.gitMinor=${minor_patch%%.*} \
      -X k8s.io/client-go/pkg/version.gitVersion=$KUBERNETES_VERSION" \
      -o "$k8s_dir/$b.tmp" "k8s.io/kubernetes/cmd/$b")
    mv "$k8s_dir/$b.tmp" "$k8s_dir/$b"
    log "built $b in $((SECONDS - t0)) s"
  done
}

build_etcd() {
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
  log "built etcd in $((SECONDS - t0)) s"
}

build_kwok() {
  [ -x "$kwok_dir/kwok" ] && { log "kwok $KWOK_VERSION: cached"; return; }
  log "kwok $KWOK_VERSION: building"
  local t0=$SECONDS
  GOBIN="$kwok_dir" go install -ldflags "$ldflags" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  log "built kwok in $((SECONDS - t0)) s"
}

build_helm() {
  [ -x "$helm_dir/helm" ] && { log "helm $HELM_VERSION: cached"; return; }
  log "helm $HELM_VERSION: building"
  local t0=$SECONDS
  GOBIN="$helm_dir" go install -ldflags "$ldflags -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  log "built helm in $((SECONDS - t0)) s"
}

# Kueue's go.mod has no replace directives, so `go install` builds it as released. Its CRDs and
# webhook manifests come from the same module version (the tests point them at a loopback URL).
build_kueue() {
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
  log "built kueue in $((SECONDS - t0)) s"
}

build_etcd
build_kubernetes
build_helm
if [ "${SKIP_KWOK:-0}" != 1 ]; then build_kwok; fi
build_kueue

for b in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet; do ln -sf "$k8s_dir/$b" "$out_dir/$b"; done
ln -sf "$etcd_dir/etcd" "$out_dir/etcd"
[ -x "$kwok_dir/kwok" ] && ln -sf "$kwok_dir/kwok" "$out_dir/kwok"
ln -sf "$helm_dir/helm" "$out_dir/helm"
ln -sf "$kueue_dir/kueue" "$out_dir/kueue"
ln -sfn "$kueue_dir/manifests" "$out_dir/kueue-manifests"
echo "$out_dir"
