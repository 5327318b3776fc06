#!/usr/bin/env bash
# The one-command demo: the BeeOS simulator and the operator on this machine, with every example
# applied, against a control plane built here or against the cluster you already have.
#   tools/demo.sh                     a real control plane built here; run until Ctrl-C (make demo)
#   tools/demo.sh --check             the same, exit 0 once every example is Ready (make demo-check)
#   tools/demo.sh --on-cluster        your kubectl's current context (make demo-on-cluster)
#   tools/demo.sh --on-cluster --check
# Add --yes to skip the question --on-cluster asks before it touches a cluster from a terminal.
#
# On your cluster, everything lives in one namespace the demo creates and deletes on exit; the CRD
# is installed only if missing, and then removed on exit. Every example uses a Secret holding the
# simulator's token (examples/namespace-credentials.yaml), so an operator already running in the
# cluster against the real BeeOS can deploy none of them. The simulator and the operator run here,
# on loopback, and stop when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."

check=false on_cluster=false yes=false
for arg in "$@"; do
  case "$arg" in
    --check) check=true ;;
    --on-cluster) on_cluster=true ;;
    --yes) yes=true ;;
    *) echo "usage: tools/demo.sh [--on-cluster] [--check] [--yes]" >&2; exit 2 ;;
  esac
done

# The demo simulator's owners. These are the simulator's own placeholder tokens, not real keys:
# team-a is the operator's default credential, team-b is in examples/namespace-credentials.yaml.
team_a=oag_00000000000000000000000000000000000000000000000000000000000000a1
team_b=oag_00000000000000000000000000000000000000000000000000000000000000b2
crd=beeosinstances.beeos.ai

if [ -t 1 ]; then say() { printf '\033[1mdemo:\033[0m %s\n' "$*"; }; else say() { printf 'demo: %s\n' "$*"; }; fi

if $on_cluster; then
  command -v kubectl >/dev/null || { echo "demo: kubectl is required (make testbins builds one)" >&2; exit 1; }
  context=$(kubectl config current-context 2>/dev/null) \
    || { echo "demo: kubectl has no current context: pick one with kubectl config use-context" >&2; exit 1; }
  server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
  namespace=beeos-demo-$(date +%s)-$$
  say "this touches the cluster of context '$context' at $server:"
  say "  namespace $namespace (created now, deleted on exit), and the CRD $crd if it is missing"
  if [ -t 0 ] && ! $yes; then
    read -r -p "Continue? [y/N] " answer
    [[ "$answer" == [yY]* ]] || exit 1
  fi
  kubectl version --request-timeout=10s >/dev/null \
    || { echo "demo: cannot reach $server as context '$context'" >&2; exit 1; }
else
  tools/k8s-testbins/build.sh
  # The kubectl built beside the control plane, at its version.
  export PATH="$PWD/tools/k8s-testbins/bin:$PATH"
  namespace=demo
fi

say "building the operator and the simulator"
build_started=$SECONDS
packages=(-p beeos-operator -p beeos-sim)
$on_cluster || packages+=(-p testenv)
cargo build ${CI:+--locked} --quiet "${packages[@]}" --bins
bin="${CARGO_TARGET_DIR:-target}/debug"
built_at=$SECONDS
say "built in $((built_at - build_started))s"

work=$(mktemp -d)
pids=()
created_namespace=false created_crd=false
cleanup() {
  status=$?
  trap - EXIT INT TERM
  if $on_cluster && $created_namespace; then
    say "deleting the demo's BeeosInstances, then namespace $namespace"
    # The operator is still running: it destroys the (simulated) instances and lets go.
    if ! kubectl delete beeosinstances --all -n "$namespace" --timeout=60s >/dev/null 2>&1; then
      # Nothing real is behind them: the simulator goes with this script.
      for name in $(kubectl get beeosinstances -n "$namespace" -o name 2>/dev/null); do
        kubectl patch "$name" -n "$namespace" --type merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
      done
    fi
  fi
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if $on_cluster; then
    if $created_namespace; then
      kubectl delete namespace "$namespace" --wait=false >/dev/null 2>&1 || true
    fi
    if $created_crd; then
      say "removing the CRD $crd the demo installed"
      kubectl delete crd "$crd" --timeout=60s >/dev/null 2>&1 || true
    fi
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

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

if ! $on_cluster; then
  say "starting kube-apiserver, etcd and kube-controller-manager"
  "$bin/testenv" up "$work/kubeconfig" >"$work/testenv.log" 2>&1 &
  pids+=($!)
  wait_for_line "$work/testenv.log" 120 "control plane ready"
  export KUBECONFIG="$work/kubeconfig"
fi

say "starting the BeeOS simulator"
"$bin/beeos-sim" --listen 127.0.0.1:0 --token "$team_a=team-a" --token "$team_b=team-b" \
  --pending-ms 1000 --provisioning-ms 3000 >"$work/sim.out" 2>"$work/sim.log" &
pids+=($!)
wait_for_line "$work/sim.out" 30 "listening on"
beeos_url=$(sed -n 's/^listening on //p' "$work/sim.out")

if ! kubectl get crd "$crd" >/dev/null 2>&1; then
  say "installing the CRD"
  kubectl apply --server-side -f crds/ >/dev/null
  created_crd=true
fi
kubectl wait --for=condition=Established "crd/$crd" --timeout=60s >/dev/null

say "creating namespace $namespace"
kubectl create namespace "$namespace" >/dev/null
created_namespace=true

operator_args=(--beeos-url "$beeos_url" --probe-address 127.0.0.1:0 --transition-poll 1s --steady-poll 10s)
if $on_cluster; then
  # Only the demo's namespace, and no default credentials: every example brings its Secret.
  say "starting the operator against $beeos_url, watching only $namespace"
  "$bin/beeos-operator" "${operator_args[@]}" --namespaces "$namespace" >"$work/operator.log" 2>&1 &
else
  say "starting the operator against $beeos_url"
  BEEOS_TOKEN=$team_a "$bin/beeos-operator" "${operator_args[@]}" >"$work/operator.log" 2>&1 &
fi
pids+=($!)
operator_started=$SECONDS

say "applying examples/ into namespace $namespace"
if $on_cluster; then
  # Every example uses the simulator's token from examples/namespace-credentials.yaml.
  mkdir "$work/examples"
  cp examples/*.yaml "$work/examples/"
  {
    echo "namespace: $namespace"
    echo "resources:"
    for file in examples/*.yaml; do echo "  - $(basename "$file")"; done
    cat <<'YAML'
patches:
  - target: {group: beeos.ai, kind: BeeosInstance}
    patch: |-
      - op: add
        path: /spec/credentials
        value: {name: beeos-team-token, key: token}
YAML
  } >"$work/examples/kustomization.yaml"
  kubectl apply -k "$work/examples"
else
  kubectl apply -n "$namespace" -f examples/
fi

# The first Ready instance, then all of them.
deadline=$((SECONDS + 120))
until kubectl get beeosinstances -n "$namespace" \
  -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -q True; do
  if ((SECONDS > deadline)); then break; fi
  sleep 0.2
done
say "first BeeosInstance Ready $((SECONDS - operator_started))s after the operator started ($((SECONDS - built_at))s after the build)"
if ! kubectl wait --for=condition=Ready beeosinstances --all -n "$namespace" --timeout=120s; then
  kubectl get beeosinstances -n "$namespace" -o yaml >&2
  echo "--- operator log ---" >&2
  tail -n 40 "$work/operator.log" >&2
  exit 1
fi
kubectl get beeosinstances -n "$namespace"

if $check; then
  say "every example is Ready"
  exit 0
fi
if $on_cluster; then
  cat <<TXT

The simulator and the operator keep running until you press Ctrl-C; then the demo deletes its
instances, namespace $namespace$($created_crd && echo " and the CRD it installed").
In another terminal:
  kubectl get bi -n $namespace -o wide
  kubectl patch bi standby-agent -n $namespace --type merge -p '{"spec":{"powerState":"Running"}}'
  kubectl delete bi research-agent -n $namespace
Operator log: $work/operator.log
TXT
else
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
fi
# In the background, so that a signal to this script ends the watch and cleans up at once.
kubectl get beeosinstances -n "$namespace" --watch &
pids+=($!)
wait $!
