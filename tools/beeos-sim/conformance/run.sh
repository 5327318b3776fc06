#!/usr/bin/env bash
# Conformance of beeos-sim with BeeOS's official Python SDK and the contract's schemas.
# Prepares the pinned venv at $REPO/.tools/venv (reinstalled when requirements.txt changes),
# builds the simulator (honouring CARGO_TARGET_DIR), starts it on a free loopback port, runs
# pytest against it and stops it on exit. Extra arguments go to pytest (e.g. -k lifecycle).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
venv="$repo/.tools/venv"
requirements="$here/requirements.txt"
stamp="$venv/.beeos-sim-conformance.sha256"

want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
  echo "conformance: installing $requirements into $venv" >&2
  "${PYTHON:-python3}" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  echo "$want" >"$stamp"
fi

echo "conformance: building beeos-sim" >&2
# Ask cargo where the binary is, so any CARGO_TARGET_DIR (relative or not) works.
sim=$(cd "$repo" && cargo build -p beeos-sim --bin beeos-sim --message-format=json-render-diagnostics |
  "$venv/bin/python" -c '
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "beeos-sim" and msg.get("executable"):
        print(msg["executable"])
')
[[ -x "$sim" ]] || { echo "conformance: beeos-sim binary not found" >&2; exit 1; }

work=$(mktemp -d)
pid=
cleanup() {
  if [[ -n "$pid" ]]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# carol is the rate-limit test's own caller; trials end 1.5 s after their deploy.
"$sim" --listen 127.0.0.1:0 \
  --token oag_conformance_alice=alice --token oag_conformance_bob=bob \
  --token oag_conformance_carol=carol \
  --pending-ms 50 --provisioning-ms 100 --stop-ms 100 --start-ms 100 --restart-ms 100 \
  --destroy-ms 100 --terminated-retention-ms 1000 --trial-ms 1500 \
  >"$work/stdout" 2>"$work/stderr" &
pid=$!

url=
for _ in $(seq 1 100); do
  url=$(sed -n 's/^listening on //p' "$work/stdout")
  [[ -n "$url" ]] && break
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "conformance: beeos-sim exited early:" >&2
    cat "$work/stderr" >&2
    exit 1
  fi
  sleep 0.1
done
[[ -n "$url" ]] || { echo "conformance: beeos-sim printed no URL within 10 s" >&2; exit 1; }
echo "conformance: beeos-sim at $url" >&2

status=0
BEEOS_SIM_URL="$url" PYTHONDONTWRITEBYTECODE=1 \
  "$venv/bin/python" -m pytest "$here" -p no:cacheprovider -q "$@" || status=$?
if [[ $status -ne 0 ]]; then
  echo "conformance: simulator log (last 40 lines):" >&2
  tail -n 40 "$work/stderr" >&2
fi
exit "$status"
