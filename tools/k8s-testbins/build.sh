#!/usr/bin/env bash
# Builds kube-apiserver, etcd and kubectl from the pinned Go modules into bin/.
# Does nothing when bin/.stamp matches the inputs (go.mod, go.sum, the mains,
# this script and the Go version), so `make test` pays the cold build once.
set -euo pipefail
cd "$(dirname "$0")"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly

# The Kubernetes version is whatever go.mod pins; the server must report it
# (Helm's kubeVersion checks read /version), so it is stamped from there.
k8s_version=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
minor=$(echo "$k8s_version" | cut -d. -f2)

stamp=$( { cat go.mod go.sum kube-apiserver/main.go etcd/main.go kubectl/main.go build.sh; go version; } | sha256sum | cut -d' ' -f1)
if [ -f bin/.stamp ] && [ "$(cat bin/.stamp)" = "$stamp" ] \
  && [ -x bin/kube-apiserver ] && [ -x bin/etcd ] && [ -x bin/kubectl ]; then
  echo "k8s-testbins: kube-apiserver, kubectl $k8s_version and etcd are current"
  exit 0
fi

mkdir -p bin
rm -f bin/.stamp
echo "k8s-testbins: building kube-apiserver, kubectl $k8s_version and etcd (cold: a few minutes)"
pkg=k8s.io/component-base/version
stamp_version="-X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
go build -trimpath -o bin/kube-apiserver -ldflags "-s -w $stamp_version" ./kube-apiserver
# kubectl at the server's version: the machine's own kubectl may be outside the supported skew.
go build -trimpath -o bin/kubectl -ldflags "-s -w $stamp_version" ./kubectl
go build -trimpath -o bin/etcd -ldflags "-s -w" ./etcd
echo "$stamp" > bin/.stamp
