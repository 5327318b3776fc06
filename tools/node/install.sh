#!/usr/bin/env bash
# Installs the Debian packages a node needs, when missing: containerd and runc (the container
# runtime), the CNI plugins (bridge, host-local, loopback), iptables (kube-proxy), socat (the
# loopback forwards into the node's network namespace) and ca-certificates (for the operator
# image). Versions are Debian 12's: the distribution release is the pin.
set -euo pipefail
packages=(containerd runc containernetworking-plugins iptables socat ca-certificates)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} = 0 ]; then
  echo "node: packages present: $(dpkg-query -W -f='${Package}=${Version} ' "${packages[@]}")"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "node: missing Debian packages ${missing[*]}: install them as root (apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "node: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# A fresh machine may have no package lists yet.
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "node: packages: $(dpkg-query -W -f='${Package}=${Version} ' "${packages[@]}")"
