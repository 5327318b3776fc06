#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, for the operator's node tests and by
# hand (`make node`): etcd, kube-apiserver, kube-controller-manager, kube-scheduler, the kubelet
# with containerd, runc and the CNI bridge, and kube-proxy, all built from the pinned
# k8s.io/kubernetes module (tools/k8s-testbins) or taken from Debian's packages.
#
#   tools/node/node.sh check                   exit 0 if this machine can run a node, else say why
#   tools/node/node.sh up [options]            start a node; print `node ready: STATE_DIR`; run until
#                                              stdin closes or SIGINT/SIGTERM, then remove it all
#     --image TAR        import an OCI image archive into the node's containerd (repeatable)
#     --sim BINARY       run the BeeOS simulator in the node at http://10.200.0.1:8095
#     --sim-arg ARG      pass ARG to the simulator (repeatable)
#     --state-dir DIR    where the node keeps its state (default: a fresh temporary directory)
#
# Everything runs inside namespaces this script creates (tools/node/inside.sh): a network
# namespace holding the node address 10.200.0.1, the bridges and every iptables rule; a mount
# namespace with private /run, /var/lib and /var/log; a PID namespace, so that nothing it
# started can outlive it (the kernel kills the lot when its first process dies). The test
# process reaches the API server and the simulator through loopback ports forwarded into it,
# written to STATE_DIR/node.env with the admin kubeconfig.
#
# What it changes outside, restored however the run ends (a stale record left by a run that was
# killed outright is restored by the next one): the kernel-wide sysctls the kubelet sets, and
# the kubelet's `kubepods` cgroups. One node per machine: concurrent runs wait for each other
# on a lock.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin_dir=${NODE_BIN_DIR:-$repo/tools/k8s-testbins/bin}
lock_file=${NODE_LOCK:-/run/lock/beeos-node.lock}
restore_file=${NODE_RESTORE:-/var/tmp/beeos-node.restore}
# The kernel-wide sysctls the kubelet sets (protectKernelDefaults: false); the per-namespace
# ones (net.*) stay inside the node's network namespace.
sysctls=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
say() { echo "node: $*" >&2; }

# What a node needs from this machine; prints what is missing.
missing() {
  local gaps=()
  [ "$(id -u)" = 0 ] || gaps+=("root (the node changes sysctls, cgroups and namespaces)")
  command -v unshare >/dev/null || gaps+=("unshare (util-linux)")
  grep -qw overlay /proc/filesystems 2>/dev/null || modprobe overlay 2>/dev/null \
    || gaps+=("the overlay filesystem (containerd's snapshotter)")
  [ -d /sys/fs/cgroup ] || gaps+=("cgroups at /sys/fs/cgroup")
  for tool in containerd containerd-shim-runc-v2 runc ctr iptables socat ip openssl python3 setpriv flock; do
    command -v "$tool" >/dev/null || gaps+=("$tool (tools/node/install.sh installs the Debian packages)")
  done
  for plugin in bridge host-local loopback; do
    [ -x "/usr/lib/cni/$plugin" ] || gaps+=("the CNI $plugin plugin (containernetworking-plugins)")
  done
  for binary in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
    [ -x "$bin_dir/$binary" ] || gaps+=("$bin_dir/$binary (make testbins nodebins)")
  done
  [ -s "$repo/target/node/pause.tar" ] || gaps+=("the pause image target/node/pause.tar (make nodebins)")
  if [ ${#gaps[@]} -gt 0 ]; then printf '%s\n' "${gaps[@]}"; fi
}

# Puts back what a run changed outside its namespaces, from the record it wrote first.
restore() {
  [ -f "$restore_file" ] || return 0
  local key value
  while read -r key value; do
    [ -n "$key" ] || continue
    if [ "$(sysctl -n "$key" 2>/dev/null)" != "$value" ]; then
      sysctl -qw "$key=$value" >/dev/null && say "restored $key=$value"
    fi
  done < "$restore_file"
  # The kubelet's QoS cgroups (it made them: the run refuses to start where they exist). Their
  # processes died with the node's PID namespace; an exiting process may hold its cgroup an
  # instant longer, so retry briefly.
  local deadline=$((SECONDS + 30)) left
  while :; do
    left=0
    for hierarchy in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
      [ -d "${hierarchy}kubepods" ] || continue
      find "${hierarchy}kubepods" -depth -type d -exec rmdir {} + 2>/dev/null || true
      [ -d "${hierarchy}kubepods" ] && left=1
    done
    [ $left = 0 ] && break
    if ((SECONDS > deadline)); then say "warning: kubepods cgroups left behind"; break; fi
    sleep 0.2
  done
  rm -f "$restore_file"
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

up() {
  local images=() sim="" sim_args=() state=""
  while [ $# -gt 0 ]; do
    case $1 in
      --image) images+=("$(realpath "$2")"); shift 2 ;;
      --sim) sim=$(realpath "$2"); shift 2 ;;
      --sim-arg) sim_args+=("$2"); shift 2 ;;
      --state-dir) state=$2; shift 2 ;;
      *) say "unknown option $1"; exit 2 ;;
    esac
  done
  local gaps; gaps=$(missing)
  if [ -n "$gaps" ]; then
    say "this machine cannot run a node; missing:"; echo "$gaps" | sed 's/^/  - /' >&2; exit 3
  fi

  mkdir -p "$(dirname "$lock_file")"
  exec 9>"$lock_file"
  if ! flock -n 9; then
    say "another node runs on this machine; waiting for it to finish"
    flock 9
  fi
  restore # a run that was killed outright left its record

  for hierarchy in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
    if [ -d "${hierarchy}kubepods" ]; then
      say "${hierarchy}kubepods exists: another kubelet runs on this machine"; exit 3
    fi
  done
  for key in "${sysctls[@]}"; do
    echo "$key $(sysctl -n "$key")"
  done > "$restore_file.new"
  mv "$restore_file.new" "$restore_file"

  if [ -z "$state" ]; then state=$(mktemp -d "${TMPDIR:-/tmp}/beeos-node-XXXXXX"); else mkdir -p "$state"; fi
  state=$(realpath "$state")
  # Globals, not locals: the EXIT trap runs teardown after this function has returned.
  inside_pid="" forwarders=() node_state=$state
  teardown() {
    trap - EXIT INT TERM
    for pid in "${forwarders[@]}"; do kill "$pid" 2>/dev/null || true; done
    if [ -n "$inside_pid" ] && kill -0 "$inside_pid" 2>/dev/null; then
      # SIGKILL to unshare: --kill-child then kills the namespace's first process, and with it
      # the kernel kills every process in the namespace.
      kill -KILL "$inside_pid" 2>/dev/null || true
      wait "$inside_pid" 2>/dev/null || true
    fi
    restore
    if [ "${NODE_KEEP:-0}" = 1 ]; then say "kept $node_state"; else rm -rf "$node_state"; fi
    say "down"
  }
  trap teardown EXIT
  trap 'exit 130' INT TERM

  local started=$SECONDS
  printf '%s\n' "${images[@]}" "$repo/target/node/pause.tar" > "$state/images"
  printf '%s\n' "${sim_args[@]}" > "$state/sim-args"
  mkdir -p "$state/log"
  # --pdeathsig: should this script itself be killed outright, the namespace goes with it
  # (the next run restores what the record lists).
  BIN_DIR=$bin_dir SIM=$sim setpriv --pdeathsig KILL unshare --pid --fork --kill-child --mount-proc --net --mount \
    --propagation private -- bash "$here/inside.sh" "$state" >"$state/log/inside.log" 2>&1 </dev/null &
  inside_pid=$!
  local deadline=$((SECONDS + ${NODE_START_TIMEOUT:-300}))
  until [ -f "$state/ready" ]; do
    if ! kill -0 "$inside_pid" 2>/dev/null || [ -f "$state/failed" ]; then
      say "the node did not start:"; tail -40 "$state/log/inside.log" >&2; exit 1
    fi
    if ((SECONDS > deadline)); then
      say "the node was not ready within ${NODE_START_TIMEOUT:-300}s:"; tail -40 "$state/log/inside.log" >&2; exit 1
    fi
    sleep 0.2
  done

  # Loopback ports forwarded through Unix sockets into the node's network namespace.
  local api_port sim_port
  api_port=$(free_port)
  setpriv --pdeathsig KILL socat "TCP-LISTEN:$api_port,bind=127.0.0.1,reuseaddr,fork" "UNIX-CONNECT:$state/api.sock" &
  forwarders+=($!)
  local sim_url=""
  if [ -n "$sim" ]; then
    sim_port=$(free_port)
    setpriv --pdeathsig KILL socat "TCP-LISTEN:$sim_port,bind=127.0.0.1,reuseaddr,fork" "UNIX-CONNECT:$state/sim.sock" &
    forwarders+=($!)
    sim_url=http://127.0.0.1:$sim_port
  fi
  sed "s|https://10.200.0.1:6443|https://127.0.0.1:$api_port|" "$state/admin.kubeconfig" > "$state/kubeconfig"
  cat > "$state/node.env" <<ENV
KUBECONFIG=$state/kubeconfig
NODE_API_URL=https://127.0.0.1:$api_port
NODE_SIM_URL=$sim_url
NODE_SIM_URL_IN_CLUSTER=$( [ -n "$sim" ] && echo http://10.200.0.1:8095 )
NODE_NAME=beeos-node
NODE_CONTAINERD=$state/containerd/containerd.sock
NODE_START_SECONDS=$((SECONDS - started))
ENV
  until KUBECONFIG=$state/kubeconfig "$bin_dir/kubectl" get --raw /readyz >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then say "the forwarded API server does not answer"; exit 1; fi
    sleep 0.1
  done
  echo "node ready: $state"
  # Until whoever started us closes our stdin (a test process however it ends, Ctrl-D) or a
  # signal arrives; the EXIT trap then removes everything.
  while read -r _; do :; done
}

case ${1:-} in
  check)
    gaps=$(missing)
    if [ -n "$gaps" ]; then echo "$gaps"; exit 3; fi
    echo "node: this machine can run a node" ;;
  up) shift; up "$@" ;;
  *) echo "usage: $0 check | up [--image TAR]... [--sim BINARY [--sim-arg ARG]...] [--state-dir DIR]" >&2; exit 2 ;;
esac
