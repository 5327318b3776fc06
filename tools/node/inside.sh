#!/usr/bin/env bash
# The node itself, run by node.sh as the first process of fresh PID, network and mount
# namespaces: nothing here is visible from the machine's own network, and everything here dies
# with this process. Usage (from node.sh only): inside.sh STATE_DIR, with BIN_DIR and SIM set.
#
# Layout inside: the node address 10.200.0.1/32 on a port-less bridge (the kubelet refuses a
# loopback node IP, Endpoints refuse loopback addresses and Pods cannot reach the node's
# 127.0.0.1); kube-apiserver on 10.200.0.1:6443; Pods on the cni0 bridge in 10.244.0.0/24;
# Services in 10.0.0.0/24 (`kubernetes` is 10.0.0.1); the simulator, when asked for, on
# 10.200.0.1:8095. The other servers listen on 127.0.0.1.
set -euo pipefail
state=$1
bin=$BIN_DIR
export PATH=$bin:$PATH
node_ip=10.200.0.1
node_name=beeos-node
service_cidr=10.0.0.0/24
pod_cidr=10.244.0.0/24
log=$state/log
kubeconfig=$state/admin.kubeconfig
fail() { echo "inside: $*" >&2; touch "$state/failed"; exit 1; }
trap 'touch "$state/failed"' ERR
step_started=$SECONDS
step() { echo "inside: [$((SECONDS - step_started))s] $*"; }

# Starts NAME in the background with its output in log/NAME.log.
daemon() {
  local name=$1; shift
  "$@" >"$log/$name.log" 2>&1 </dev/null &
  echo $! >"$state/$name.pid"
}
# Waits up to $1 seconds until the command after it succeeds; fails naming $2's log.
wait_for() {
  local timeout=$1 name=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$(cat "$state/$name.pid")" 2>/dev/null; then
      tail -30 "$log/$name.log" >&2; fail "$name exited"
    fi
    if ((SECONDS > deadline)); then tail -30 "$log/$name.log" >&2; fail "$name not ready after ${timeout}s"; fi
    sleep 0.1
  done
}
kc() { kubectl --kubeconfig "$kubeconfig" "$@"; }
# Whether the server on 127.0.0.1:$1 (a self-signed certificate) answers /healthz with ok.
healthy() {
  python3 -c 'import ssl, sys, urllib.request
answer = urllib.request.urlopen("https://127.0.0.1:%s/healthz" % sys.argv[1], timeout=2,
                                context=ssl._create_unverified_context()).read()
sys.exit(answer.strip() != b"ok")' "$1"
}

# 1. Private copies of the host paths containerd and the kubelet write to whatever their
#    configuration says (/run/containerd, /var/lib/kubelet/device-plugins, /var/log/pods…).
for path in /run /var/lib /var/log; do mount -t tmpfs -o mode=0755 tmpfs "$path"; done
mkdir -p /run/lock

# 2. Network: loopback and the node address.
ip link set lo up
ip link add knode0 type bridge # this kernel may lack the dummy driver; a bridge without ports does
ip addr add "$node_ip/32" dev knode0
ip link set knode0 up
step "namespaces and node address ready"

# 3. Certificates and tokens: a CA, the API server's serving certificate (for the node
#    address, the forwarded 127.0.0.1 and the `kubernetes` Service), the ServiceAccount signing
#    key, and the API server's client certificate for the kubelet.
pki=$state/pki
mkdir -p "$pki" "$log"
(
  cd "$pki"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout ca.key -out ca.crt -subj /CN=beeos-node-ca 2>/dev/null
  sign() { # NAME SUBJECT [SUBJECT_ALT_NAMES]
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" \
      -subj "$2" 2>/dev/null
    printf 'extendedKeyUsage=serverAuth,clientAuth\n%s' "${3:+subjectAltName=$3}" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -out "$1.crt" \
      -extfile "$1.ext" 2>/dev/null
  }
  sign serving /CN=kube-apiserver "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$node_ip,IP:10.0.0.1"
  sign kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out sa.key
  openssl ec -in sa.key -pubout -out sa.pub 2>/dev/null
  token() { od -An -N32 -tx1 /dev/urandom | tr -d ' \n'; }
  {
    echo "$(token),node-admin,node-admin,\"system:masters\""
    echo "$(token),system:node:$node_name,kubelet,\"system:nodes\""
    echo "$(token),system:kube-controller-manager,kube-controller-manager"
    echo "$(token),system:kube-scheduler,kube-scheduler"
    echo "$(token),system:kube-proxy,kube-proxy"
  } > tokens.csv
  chmod 600 ./*.key tokens.csv
)
write_kubeconfig() { # FILE USER
  local token; token=$(grep ",$2," "$pki/tokens.csv" | cut -d, -f1)
  cat > "$1" <<YAML
apiVersion: v1
kind: Config
clusters: [{name: beeos-node, cluster: {server: "https://$node_ip:6443", certificate-authority: "$pki/ca.crt"}}]
users: [{name: $2, user: {token: "$token"}}]
contexts: [{name: beeos-node, context: {cluster: beeos-node, user: $2}}]
current-context: beeos-node
YAML
  chmod 600 "$1"
}
write_kubeconfig "$kubeconfig" node-admin
write_kubeconfig "$state/kubelet.kubeconfig" system:node:$node_name
for component in kube-controller-manager kube-scheduler kube-proxy; do
  write_kubeconfig "$state/$component.kubeconfig" system:$component
done
step "certificates written"

# 4. containerd (Debian's), with everything under the state directory.
ctr_root=$state/containerd
mkdir -p "$ctr_root" "$state/cni/net.d"
cat > "$ctr_root/config.toml" <<TOML
version = 2
root = "$ctr_root/root"
state = "$ctr_root/state"
[grpc]
  address = "$ctr_root/containerd.sock"
[ttrpc]
  address = "$ctr_root/containerd.sock.ttrpc"
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$ctr_root/opt"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "localhost/pause:node"
    netns_mounts_under_state_dir = true
    # Machines like this one withhold CAP_SYS_RESOURCE even from root, so a negative
    # oom_score_adj (every sandbox's -998) makes runc fail with "can't get final child's PID
    # from pipe: EOF". This clamps scores at containerd's own instead.
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "$state/cni/net.d"
TOML
daemon containerd containerd --config "$ctr_root/config.toml"
wait_for 60 containerd ctr --address "$ctr_root/containerd.sock" version
while read -r image; do
  [ -n "$image" ] || continue
  ctr --address "$ctr_root/containerd.sock" -n k8s.io images import "$image" >/dev/null \
    || fail "importing $image"
done < "$state/images"
step "containerd ready, images imported"

# 5. etcd and kube-apiserver: the test control plane's flags (tools/testenv), except that it
#    serves the node address, authorizes the kubelet (Node, NodeRestriction), gives Pods their
#    ServiceAccount tokens (the ServiceAccount admission plugin stays on) and reaches the
#    kubelet for logs with a client certificate.
daemon etcd etcd --data-dir="$state/etcd" \
  --listen-client-urls=http://127.0.0.1:2379 --advertise-client-urls=http://127.0.0.1:2379 \
  --listen-peer-urls=http://127.0.0.1:2380 --initial-advertise-peer-urls=http://127.0.0.1:2380 \
  --initial-cluster=default=http://127.0.0.1:2380 --unsafe-no-fsync=true --log-level=warn
daemon kube-apiserver kube-apiserver --etcd-servers=http://127.0.0.1:2379 \
  --bind-address=$node_ip --advertise-address=$node_ip --secure-port=6443 \
  --cert-dir="$state/apiserver-certs" \
  --tls-cert-file="$pki/serving.crt" --tls-private-key-file="$pki/serving.key" \
  --client-ca-file="$pki/ca.crt" --token-auth-file="$pki/tokens.csv" \
  --service-account-issuer=https://kubernetes.default.svc \
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
  --kubelet-client-certificate="$pki/kubelet-client.crt" --kubelet-client-key="$pki/kubelet-client.key" \
  --kubelet-preferred-address-types=InternalIP \
  --service-cluster-ip-range=$service_cidr --allow-privileged=true \
  --enable-priority-and-fairness=false
apiserver_ready() { [ "$(kc get --raw /readyz 2>/dev/null)" = ok ]; }
wait_for 180 kube-apiserver apiserver_ready
step "kube-apiserver ready"

# 6. The controllers and the scheduler (loopback only, no leader election), then the kubelet
#    and kube-proxy.
daemon kube-controller-manager kube-controller-manager \
  --kubeconfig="$state/kube-controller-manager.kubeconfig" \
  --authentication-kubeconfig="$state/kube-controller-manager.kubeconfig" \
  --authorization-kubeconfig="$state/kube-controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=10257 --leader-elect=false \
  --use-service-account-credentials=true \
  --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
  --service-cluster-ip-range=$service_cidr --allocate-node-cidrs=false
daemon kube-scheduler kube-scheduler \
  --kubeconfig="$state/kube-scheduler.kubeconfig" \
  --authentication-kubeconfig="$state/kube-scheduler.kubeconfig" \
  --authorization-kubeconfig="$state/kube-scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=10259 --leader-elect=false

cat > "$state/cni/net.d/10-beeos-node.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "beeos-node",
  "plugins": [{
    "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
    "ipam": {"type": "host-local", "dataDir": "$state/cni/ipam",
             "ranges": [[{"subnet": "$pod_cidr"}]], "routes": [{"dst": "0.0.0.0/0"}]}
  }]
}
JSON
mkdir -p "$state/kubelet"
cat > "$state/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node_ip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
cgroupDriver: cgroupfs
# This kind of machine has cgroup v1 (hybrid); upstream keeps it working only on request.
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$ctr_root/containerd.sock
podLogsDir: $state/kubelet/pod-logs
volumePluginDir: $state/kubelet/volume-plugins
clusterDomain: cluster.local
podCIDR: $pod_cidr
makeIPTablesUtilChains: false
# It then sets the kernel-wide sysctls it wants; node.sh records and restores them.
protectKernelDefaults: false
serializeImagePulls: false
# Nothing is pulled: every image is imported, so never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "2%", imagefs.available: "2%"}
YAML
daemon kubelet kubelet --config="$state/kubelet/config.yaml" \
  --kubeconfig="$state/kubelet.kubeconfig" --root-dir="$state/kubelet/root" \
  --cert-dir="$state/kubelet/pki" --hostname-override=$node_name --node-ip=$node_ip --v=1
cat > "$state/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $state/kube-proxy.kubeconfig}
mode: iptables
hostnameOverride: $node_name
bindAddress: $node_ip
clusterCIDR: 10.244.0.0/16
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# No conntrack sysctls (they are kernel-wide), no localhost NodePorts (route_localnet).
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
nodePortAddresses: ["$node_ip/32"]
iptables: {localhostNodePorts: false}
YAML
daemon kube-proxy kube-proxy --config="$state/kube-proxy.yaml"

node_ready() {
  kc get node $node_name -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -qx True
}
wait_for 180 kubelet node_ready
step "node Ready"
# Pods reach the API server through the `kubernetes` Service only once kube-proxy has written
# its rules, and kube-controller-manager serves its controllers once healthy.
kubernetes_service_routed() { iptables -t nat -S KUBE-SERVICES | grep -q default/kubernetes; }
wait_for 120 kube-proxy kubernetes_service_routed
wait_for 120 kube-controller-manager healthy 10257
wait_for 120 kube-controller-manager kc -n default get serviceaccount default
wait_for 120 kube-scheduler healthy 10259
step "kube-proxy, kube-controller-manager and kube-scheduler running"

# 7. The simulator, reachable from Pods at the node address.
if [ -n "${SIM:-}" ]; then
  mapfile -t sim_args < <(grep -v '^$' "$state/sim-args" || true)
  daemon beeos-sim "$SIM" --listen "$node_ip:8095" "${sim_args[@]}"
  wait_for 60 beeos-sim grep -q "listening on" "$log/beeos-sim.log"
  socat_sim=1
fi

# 8. The way in from the machine's loopback: Unix sockets, which are files, not addresses.
daemon forward-api socat "UNIX-LISTEN:$state/api.sock,fork,mode=600" "TCP:$node_ip:6443"
if [ -n "${socat_sim:-}" ]; then
  daemon forward-sim socat "UNIX-LISTEN:$state/sim.sock,fork,mode=600" "TCP:$node_ip:8095"
  wait_for 30 forward-sim test -S "$state/sim.sock"
fi
wait_for 30 forward-api test -S "$state/api.sock"
step "ready"
touch "$state/ready"

# PID 1 of the namespace: reap whatever is re-parented here (containerd's shims) until killed.
trap 'exit 0' TERM INT
while :; do wait -n 2>/dev/null || sleep 1; done
