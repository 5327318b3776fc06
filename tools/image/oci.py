#!/usr/bin/env python3
"""Writes a one-layer OCI image archive (an OCI image layout in a tar) without a container
engine, reproducibly: the same inputs give the same bytes, so the same digest.

Every entry of the layer and of the archive has mtime 0, owner 0:0 and no user or group names;
entries are sorted; JSON is written with sorted keys and no spaces. Nothing here reads the
clock, the user or the host name.

    oci.py --out IMAGE.tar --ref NAME:TAG --spec SPEC.json

SPEC is JSON:
    {"files": [{"src": "/host/path", "dest": "usr/local/bin/x", "mode": 493}, ...],
     "dirs": [{"dest": "tmp", "mode": 1023}, ...],
     "symlinks": [{"dest": "lib64", "target": "usr/lib64"}, ...],
     "config": {"User": "65532:65532", "Entrypoint": [...], ...}}
Parent directories of files are added with mode 0755. The digest of the image manifest is
printed on stdout.
"""

import argparse
import hashlib
import io
import json
import platform
import sys
import tarfile

ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64"}


def canonical_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def tar_info(name, kind, mode, size=0, target=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.size = size
    info.linkname = target
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def layer_bytes(spec):
    """The layer as an uncompressed tar: directories, files and symlinks, sorted by path."""
    entries = {}
    for directory in spec.get("dirs", []):
        entries[directory["dest"].strip("/")] = ("dir", directory["mode"], None)
    for file in spec.get("files", []):
        dest = file["dest"].strip("/")
        parts = dest.split("/")
        for depth in range(1, len(parts)):
            entries.setdefault("/".join(parts[:depth]), ("dir", 0o755, None))
        entries[dest] = ("file", file["mode"], file["src"])
    for link in spec.get("symlinks", []):
        entries[link["dest"].strip("/")] = ("symlink", 0o777, link["target"])

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            kind, mode, source = entries[name]
            if kind == "dir":
                tar.addfile(tar_info(name, tarfile.DIRTYPE, mode))
            elif kind == "symlink":
                tar.addfile(tar_info(name, tarfile.SYMTYPE, mode, target=source))
            else:
                with open(source, "rb") as handle:
                    data = handle.read()
                tar.addfile(tar_info(name, tarfile.REGTYPE, mode, len(data)), io.BytesIO(data))
    return buffer.getvalue()


def blob(data):
    return "sha256:" + hashlib.sha256(data).hexdigest(), len(data)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--ref", required=True, help="the image name, e.g. beeos-operator:dev")
    parser.add_argument("--spec", required=True)
    args = parser.parse_args()
    with open(args.spec) as handle:
        spec = json.load(handle)

    architecture = ARCHITECTURES.get(platform.machine(), platform.machine())
    layer = layer_bytes(spec)
    layer_digest, layer_size = blob(layer)
    config = canonical_json({
        "architecture": architecture,
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": spec["config"],
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tools/image/oci.py"}],
    })
    config_digest, config_size = blob(config)
    manifest = canonical_json({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer_digest, "size": layer_size}],
    })
    manifest_digest, manifest_size = blob(manifest)
    tag = args.ref.rsplit(":", 1)[1] if ":" in args.ref.rsplit("/", 1)[-1] else "latest"
    index = canonical_json({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "platform": {"architecture": architecture, "os": "linux"},
            # containerd names the imported image after the first; OCI tools use the second.
            "annotations": {"io.containerd.image.name": args.ref,
                            "org.opencontainers.image.ref.name": tag},
        }],
    })
    layout = canonical_json({"imageLayoutVersion": "1.0.0"})

    members = {"oci-layout": layout, "index.json": index}
    for data in (layer, config, manifest):
        digest, _ = blob(data)
        members["blobs/sha256/" + digest.split(":", 1)[1]] = data
    with tarfile.open(args.out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for directory in ("blobs", "blobs/sha256"):
            archive.addfile(tar_info(directory, tarfile.DIRTYPE, 0o755))
        for name in sorted(members):
            data = members[name]
            archive.addfile(tar_info(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    print(manifest_digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
