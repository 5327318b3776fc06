#!/usr/bin/env bash
# The one-command demo: a real control plane, the BeeOS simulator and the operator on this
# machine, with every example applied.
#   tools/demo.sh          run until Ctrl-C, watching the instances (make demo)
#   tools/demo.sh --check  exit 0 once every example is Ready, non-zero otherwise (make demo-check)
# Everything it starts runs on loopback and stops when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."

check=false
[[ "${1:-}" == "--check" ]] && check=true

# The demo simulator's owners. These are the simulator's own placeholder tokens, not real keys:
# team-a is the operator's default credential, team-b is in examples/namespace-credentials.yaml.
team_a=oag_00000000000000000000000000000000000000000000000000000000000000a1
team_b=oag_00000000000000000000000000000000000000000000000000000000000000b2

say() { printf '\033[1mdemo:\033[0m %s\n' "$*"; }

tools/k8s-testbins/build.sh
# The kubectl built beside the control plane, at its version.
export PATH="$PWD/tools/k8s-testbins/bin:$PATH"
say "building the operator, the simulator and the control-plane harness"
cargo build ${CI:+--locked} --quiet -p beeos-operator -p beeos-sim -p testenv --bins
bin="${CARGO_TARGET_DIR:-target}/debug"

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Waits up to $2 seconds for a line matching $3 in file $1.
wait_for_line() {
  local deadline=$((SECONDS + $2))
  until grep -q "$3" "$1" 2>/dev/null; do
    if ((SECONDS > deadline)); then
      echo "demo: timed out waiting for '$3' in $1:" >&2
      cat "$1" >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

say "starting kube-apiserver and etcd"
"$bin/testenv" up "$work/kubeconfig" >"$work/testenv.log" 2>&1 &
pids+=($!)
wait_for_line "$work/testenv.log" 120 "control plane ready"
export KUBECONFIG="$work/kubeconfig"

say "starting the BeeOS simulator"
"$bin/beeos-sim" --listen 127.0.0.1:0 --token "$team_a=team-a" --token "$team_b=team-b" \
  --pending-ms 1000 --provisioning-ms 3000 >"$work/sim.out" 2>"$work/sim.log" &
pids+=($!)
wait_for_line "$work/sim.out" 30 "listening on"
beeos_url=$(sed -n 's/^listening on //p' "$work/sim.out")

say "installing the CRD"
kubectl apply --server-side -f crds/ >/dev/null
kubectl wait --for=condition=Established crd/beeosinstances.beeos.ai --timeout=60s >/dev/null

say "starting the operator against $beeos_url"
BEEOS_TOKEN=$team_a "$bin/beeos-operator" --beeos-url "$beeos_url" --probe-address 127.0.0.1:0 \
  --transition-poll 1s --steady-poll 10s >"$work/operator.log" 2>&1 &
pids+=($!)

say "applying examples/ into namespace demo"
kubectl create namespace demo >/dev/null
kubectl apply -n demo -f examples/
if ! kubectl wait --for=condition=Ready beeosinstances --all -n demo --timeout=120s; then
  kubectl get beeosinstances -n demo -o yaml >&2
  echo "--- operator log ---" >&2
  tail -n 40 "$work/operator.log" >&2
  exit 1
fi
kubectl get beeosinstances -n demo

if $check; then
  say "every example is Ready"
  exit 0
fi
cat <<TXT

The control plane, the simulator and the operator keep running until you press Ctrl-C.
In another terminal:
  export KUBECONFIG=$KUBECONFIG
  kubectl get bi -n demo
  kubectl patch bi standby-agent -n demo --type merge -p '{"spec":{"powerState":"Running"}}'
  kubectl annotate bi catalog-agent -n demo beeos.ai/restart-requested-at="\$(date -Iseconds)"
  kubectl delete bi research-agent -n demo
Operator log: $work/operator.log
TXT
kubectl get beeosinstances -n demo --watch
