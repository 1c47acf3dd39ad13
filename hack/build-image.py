#!/usr/bin/env python3
"""Builds a single-layer OCI image archive (for `ctr images import`) from a directory.

usage: build-image.py NAME ROOTFS_DIR OUT.tar [--entrypoint ARG ...] [--cmd ARG ...]

No registry, no docker: the layer is a plain tar of ROOTFS_DIR, the archive is an OCI
image layout whose index names the image (io.containerd.image.name), so containerd
imports it under NAME.
"""
import hashlib, io, json, os, sys, tarfile, time


def blob(files, data, media):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    files["blobs/sha256/" + digest.split(":")[1]] = data
    return {"mediaType": media, "digest": digest, "size": len(data)}


def layer_tar(root):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames) + sorted(filenames):
                full = os.path.join(dirpath, name)
                arc = os.path.relpath(full, root)
                info = t.gettarinfo(full, arcname=arc)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                if info.isfile():
                    with open(full, "rb") as f:
                        t.addfile(info, f)
                else:
                    t.addfile(info)
    return buf.getvalue()


def main():
    args = sys.argv[1:]
    if len(args) < 3:
        sys.exit(__doc__)
    name, root, out = args[:3]
    entrypoint, cmd, cur = [], [], None
    for a in args[3:]:
        if a in ("--entrypoint", "--cmd"):
            cur = entrypoint if a == "--entrypoint" else cmd
        elif cur is None:
            sys.exit("unexpected argument %r" % a)
        else:
            cur.append(a)
    files = {}
    layer = layer_tar(root)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    layer_desc = blob(files, layer, "application/vnd.oci.image.layer.v1.tar")
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": entrypoint or None,
            "Cmd": cmd or None,
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "hack/build-image.py"}],
    }
    config_desc = blob(files, json.dumps(config, sort_keys=True).encode(),
                       "application/vnd.oci.image.config.v1+json")
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_desc, "layers": [layer_desc]}
    man_desc = blob(files, json.dumps(manifest, sort_keys=True).encode(),
                    "application/vnd.oci.image.manifest.v1+json")
    man_desc["platform"] = {"architecture": "amd64", "os": "linux"}
    man_desc["annotations"] = {"io.containerd.image.name": name,
                               "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}
    files["index.json"] = json.dumps({"schemaVersion": 2, "manifests": [man_desc]}).encode()
    files["oci-layout"] = b'{"imageLayoutVersion":"1.0.0"}'
    with tarfile.open(out, "w") as t:
        for path in sorted(files):
            data = files[path]
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = int(time.time())
            t.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    main()
