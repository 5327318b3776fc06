#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, etcd and kubectl from the pinned Go modules
# into bin/.
# Does nothing when bin/.stamp matches the inputs (go.mod, go.sum, the mains,
# this script and the Go version), so `make test` pays the cold build once.
set -euo pipefail
cd "$(dirname "$0")"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=readonly

# The Kubernetes version is whatever go.mod pins; the server must report it
# (Helm's kubeVersion checks read /version), so it is stamped from there.
k8s_version=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
minor=$(echo "$k8s_version" | cut -d. -f2)

kube_binaries=(kube-apiserver kube-controller-manager kubectl)
stamp=$( { cat go.mod go.sum etcd/main.go build.sh; for b in "${kube_binaries[@]}"; do cat "$b/main.go"; done; go version; } | sha256sum | cut -d' ' -f1)
current=1
for b in etcd "${kube_binaries[@]}"; do [ -x "bin/$b" ] || current=0; done
if [ $current = 1 ] && [ -f bin/.stamp ] && [ "$(cat bin/.stamp)" = "$stamp" ]; then
  echo "k8s-testbins: ${kube_binaries[*]} $k8s_version and etcd are current"
  exit 0
fi

mkdir -p bin
rm -f bin/.stamp
echo "k8s-testbins: building ${kube_binaries[*]} $k8s_version and etcd (cold: a few minutes)"
pkg=k8s.io/component-base/version
stamp_version="-X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
# kubectl at the server's version: the machine's own kubectl may be outside the supported skew.
for b in "${kube_binaries[@]}"; do
  started=$SECONDS
  go build -trimpath -o "bin/$b" -ldflags "-s -w $stamp_version" "./$b"
  echo "k8s-testbins: built $b in $((SECONDS - started))s"
done
go build -trimpath -o bin/etcd -ldflags "-s -w" ./etcd
echo "$stamp" > bin/.stamp
