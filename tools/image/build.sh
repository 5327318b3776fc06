#!/usr/bin/env bash
# Builds the operator's container image without a container engine or a registry: the release
# binary, the shared libraries it links (from this Debian machine: glibc and libgcc, as in a
# distroless "cc" image), Debian's CA bundle, a passwd/group naming the non-root user 65532, and
# no shell. The result is an OCI image archive that `ctr images import` (or `docker load`,
# `podman load`, `skopeo`) takes. User, entrypoint, port and labels match the Dockerfile, which
# a test checks; the archive is reproducible (same inputs, same digest).
#
#   tools/image/build.sh [OUT_DIR]     (default target/image)
# Writes OUT_DIR/beeos-operator.tar and OUT_DIR/beeos-operator.digest (the manifest digest).
# IMAGE_REF names the image (default localhost/beeos-operator:<crate version>). IMAGE_PROFILE
# is the Cargo profile: `release` (default, what users run) or `dev` (the binary the tests
# already built, stripped: `make test` uses it, as a cold release build takes minutes).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-target/image}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
ref=${IMAGE_REF:-localhost/beeos-operator:$version}
started=$SECONDS

profile=${IMAGE_PROFILE:-release}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
case $profile in
  release)
    # Stripped like the Dockerfile's build (CARGO_PROFILE_RELEASE_STRIP there).
    CARGO_PROFILE_RELEASE_STRIP=symbols cargo build ${CI:+--locked} --quiet --release --bin beeos-operator
    binary=${CARGO_TARGET_DIR:-target}/release/beeos-operator ;;
  dev)
    # Stripped here: a profile setting would rebuild every dependency of the tests' build.
    cargo build ${CI:+--locked} --quiet --bin beeos-operator
    strip --strip-all -o "$work/beeos-operator" "${CARGO_TARGET_DIR:-target}/debug/beeos-operator"
    binary=$work/beeos-operator ;;
  *) echo "image: IMAGE_PROFILE must be release or dev, not $profile" >&2; exit 2 ;;
esac
# Every library the dynamic loader would map, at the path it would look for it.
libraries=$(ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u)
[ -n "$libraries" ] || { echo "image: ldd found no libraries for $binary" >&2; exit 1; }
ca_bundle=/etc/ssl/certs/ca-certificates.crt
[ -s "$ca_bundle" ] || { echo "image: $ca_bundle is missing: install Debian's ca-certificates" >&2; exit 1; }

{
  printf '{"files": ['
  printf '{"src": "%s", "dest": "usr/local/bin/beeos-operator", "mode": 493}' "$(realpath "$binary")"
  for library in $libraries; do
    printf ', {"src": "%s", "dest": "%s", "mode": 493}' "$(realpath "$library")" "${library#/}"
  done
  printf ', {"src": "%s", "dest": "etc/ssl/certs/ca-certificates.crt", "mode": 420}' "$(realpath "$ca_bundle")"
  for file in passwd group nsswitch.conf; do
    printf ', {"src": "%s", "dest": "etc/%s", "mode": 420}' "$PWD/tools/image/rootfs/etc/$file" "$file"
  done
  printf '], "dirs": [{"dest": "tmp", "mode": 1023}, {"dest": "home/nonroot", "mode": 493}],'
  # The Dockerfile's final stage says the same (checked by tests/node.rs).
  cat <<'JSON'
  "config": {
    "User": "65532:65532",
    "Entrypoint": ["/usr/local/bin/beeos-operator"],
    "ExposedPorts": {"8080/tcp": {}},
    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"],
    "WorkingDir": "/",
    "Labels": {
      "org.opencontainers.image.title": "beeos-operator",
      "org.opencontainers.image.description": "Runs BeeOS AI-agent instances from BeeosInstance resources",
      "org.opencontainers.image.licenses": "Apache-2.0"
    }
  }
}
JSON
} > "$work/spec.json"

mkdir -p "$out"
digest=$(python3 tools/image/oci.py --out "$out/beeos-operator.tar" --ref "$ref" --spec "$work/spec.json")
echo "$digest" > "$out/beeos-operator.digest"
echo "$ref" > "$out/beeos-operator.ref"
echo "$profile" > "$out/beeos-operator.profile"
echo "image: $ref $digest ($profile) ($(du -h "$out/beeos-operator.tar" | cut -f1), $((SECONDS - started))s) in $out/beeos-operator.tar"
