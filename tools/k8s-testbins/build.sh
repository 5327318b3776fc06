#!/usr/bin/env bash
# Builds the Kubernetes binaries from the pinned Go modules into bin/:
#   build.sh        the control plane: etcd, kube-apiserver, kube-controller-manager, kubectl
#   build.sh node   the node as well: kubelet, kube-proxy, kube-scheduler (tools/node)
# Does nothing when a group's stamp (bin/.stamp, bin/.stamp-node) matches its inputs (go.mod,
# go.sum, the mains, this script and the Go version), so `make test` pays the cold build once.
set -euo pipefail
cd "$(dirname "$0")"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly

# The Kubernetes version is whatever go.mod pins; the servers must report it
# (Helm's kubeVersion checks read /version), so it is stamped from there.
k8s_version=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
minor=$(echo "$k8s_version" | cut -d. -f2)
pkg=k8s.io/component-base/version
stamp_version="-X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"

# build_group STAMP_FILE BINARY...: builds the binaries unless the stamp is current.
build_group() {
  local stamp_file=$1; shift
  local stamp current=1
  stamp=$( { cat go.mod go.sum build.sh; for b in "$@"; do cat "$b/main.go"; done; go version; } | sha256sum | cut -d' ' -f1)
  for b in "$@"; do [ -x "bin/$b" ] || current=0; done
  if [ $current = 1 ] && [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; then
    echo "k8s-testbins: $* ($k8s_version) are current"
    return
  fi
  mkdir -p bin
  rm -f "$stamp_file"
  echo "k8s-testbins: building $* ($k8s_version; cold: a few minutes)"
  for b in "$@"; do
    local started=$SECONDS
    if [ "$b" = etcd ]; then
      go build -trimpath -o bin/etcd -ldflags "-s -w" ./etcd
    else
      go build -trimpath -o "bin/$b" -ldflags "-s -w $stamp_version" "./$b"
    fi
    echo "k8s-testbins: built $b in $((SECONDS - started))s"
  done
  echo "$stamp" > "$stamp_file"
}

# kubectl at the server's version: the machine's own kubectl may be outside the supported skew.
build_group bin/.stamp etcd kube-apiserver kube-controller-manager kubectl
case ${1:-} in
  "") ;;
  node) build_group bin/.stamp-node kubelet kube-proxy kube-scheduler ;;
  *) echo "usage: $0 [node]" >&2; exit 2 ;;
esac
