#!/usr/bin/env bash
# Builds what a node needs beside the Kubernetes binaries: the Pod sandbox ("pause") image, from
# tools/node/pause, as an OCI archive in target/node/pause.tar (tools/image/oci.py). Cached by
# a stamp of its inputs.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=target/node
stamp=$( { cat tools/node/pause/main.go tools/node/pause/go.mod tools/image/oci.py tools/node/build.sh; go version; } | sha256sum | cut -d' ' -f1)
if [ -s "$out/pause.tar" ] && [ "$(cat "$out/.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "node: the pause image is current"; exit 0
fi
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd tools/node/pause && GOTOOLCHAIN=local CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/pause" .)
cat > "$work/spec.json" <<JSON
{"files": [{"src": "$work/pause", "dest": "pause", "mode": 493}],
 "config": {"User": "65535:65535", "Entrypoint": ["/pause"], "WorkingDir": "/"}}
JSON
python3 tools/image/oci.py --out "$out/pause.tar" --ref localhost/pause:node --spec "$work/spec.json" >/dev/null
echo "$stamp" > "$out/.stamp"
echo "node: built the pause image $out/pause.tar"
