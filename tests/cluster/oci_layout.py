#!/usr/bin/env python3
"""OCI image archives without a container engine, for the real node (`cluster.sh images`).

  oci_layout.py build OUT.tar --name REF [--layer TAR]... [--add SRC:DEST:MODE:UID:GID]...
        [--dir DEST:MODE:UID:GID]... [--file DEST:MODE:UID:GID:TEXT]... [--symlink DEST:TARGET]...
        [--entrypoint JSON] [--cmd JSON] [--user U:G] [--env K=V]... [--expose 8080/tcp]...
        [--label K=V]... [--dockerfile PATH]
  oci_layout.py describe DOCKERFILE     what the Dockerfile's final stage puts in its image
  oci_layout.py inspect OUT.tar         the same, read back from an archive

`build` writes an OCI image layout as a tar (`ctr images import` names the image after the
index's `io.containerd.image.name` annotation). `--layer` tars are used as they are; the
--add/--dir/--file/--symlink entries make one more layer with mtime 0 and sorted entries,
so the same inputs give the same digest. With `--dockerfile`, the user, entrypoint, command,
exposed ports and labels come from the Dockerfile's final stage (ARG defaults substituted):
the image built here cannot drift from the one `docker build` makes. `build` prints the
manifest digest; an archive whose digest did not change is left untouched.

`describe` and `inspect` print the same JSON shape, {"files", "user", "entrypoint", "cmd",
"exposed_ports", "labels"} ("files": the paths the final stage COPYs in, and the files of the
archive's top layer), so a test can compare the two.
"""
import argparse
import hashlib
import io
import json
import os
import re
import shlex
import sys
import tarfile
import tempfile


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def dockerfile_final_stage(path):
    """User, entrypoint, cmd, ports, labels and copied files of the Dockerfile's last stage."""
    text = open(path).read()
    lines, current = [], ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#") and not current:
            continue
        if raw.endswith("\\"):
            current += raw[:-1] + " "
            continue
        current += raw
        if current.strip():
            lines.append(current.strip())
        current = ""
    args, stage = {}, []
    for line in lines:
        word = line.split(None, 1)[0].upper()
        if word == "FROM":
            stage = []
        stage.append(line)
    for line in stage:
        word, _, rest = line.partition(" ")
        if word.upper() == "ARG" and "=" in rest:
            key, _, value = rest.strip().partition("=")
            args[key] = value.strip().strip('"')

    def subst(value):
        return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), ""), value)

    out = {"files": [], "user": "", "entrypoint": None, "cmd": None, "exposed_ports": [], "labels": {}}
    for line in stage:
        word, _, rest = line.partition(" ")
        word, rest = word.upper(), rest.strip()
        if word == "LABEL":
            for token in shlex.split(rest):
                key, _, value = token.partition("=")
                out["labels"][key] = subst(value)
        elif word == "USER":
            out["user"] = subst(rest)
        elif word == "ENTRYPOINT":
            out["entrypoint"] = json.loads(rest)
        elif word == "CMD":
            out["cmd"] = json.loads(rest)
        elif word == "EXPOSE":
            out["exposed_ports"] += [p if "/" in p else p + "/tcp" for p in rest.split()]
        elif word == "COPY":
            parts = [p for p in rest.split() if not p.startswith("--")]
            dest = parts[-1]
            for src in parts[:-1]:
                out["files"].append(dest + os.path.basename(src) if dest.endswith("/") else dest)
    out["files"].sort()
    out["exposed_ports"].sort()
    return out


def extra_layer(args, path):
    entries = []  # (name, TarInfo, data)

    def info(name, kind, mode, uid, gid, size=0):
        ti = tarfile.TarInfo(name.lstrip("/"))
        ti.type, ti.mode, ti.uid, ti.gid, ti.size, ti.mtime = kind, int(mode, 8), int(uid), int(gid), size, 0
        ti.uname = ti.gname = ""
        return ti

    for spec in args.dir:
        dest, mode, uid, gid = spec.split(":")
        entries.append((dest, info(dest, tarfile.DIRTYPE, mode, uid, gid), None))
    for spec in args.file:
        dest, mode, uid, gid, text = spec.split(":", 4)
        data = text.encode().decode("unicode_escape").encode()
        entries.append((dest, info(dest, tarfile.REGTYPE, mode, uid, gid, len(data)), data))
    for spec in args.add:
        src, dest, mode, uid, gid = spec.split(":")
        if not os.path.isfile(src):
            sys.exit(f"oci_layout.py: {src} does not exist (needed for {dest})")
        entries.append((dest, info(dest, tarfile.REGTYPE, mode, uid, gid, os.path.getsize(src)), src))
    for spec in args.symlink:
        dest, target = spec.split(":")
        ti = info(dest, tarfile.SYMTYPE, "777", 0, 0)
        ti.linkname = target
        entries.append((dest, ti, None))
    entries.sort(key=lambda e: e[0])
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for _, ti, data in entries:
            if isinstance(data, bytes):
                tar.addfile(ti, io.BytesIO(data))
            elif isinstance(data, str):
                with open(data, "rb") as f:
                    tar.addfile(ti, f)
            else:
                tar.addfile(ti)


def build(args):
    config = {"Env": args.env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]}
    labels = dict(kv.split("=", 1) for kv in args.label)
    ports = list(args.expose)
    if args.dockerfile:
        stage = dockerfile_final_stage(args.dockerfile)
        labels.update(stage["labels"])
        ports += stage["exposed_ports"]
        args.user = args.user or stage["user"]
        args.entrypoint = args.entrypoint or json.dumps(stage["entrypoint"])
        args.cmd = args.cmd or (json.dumps(stage["cmd"]) if stage["cmd"] is not None else None)
    if args.user:
        config["User"] = args.user
    if args.entrypoint:
        config["Entrypoint"] = json.loads(args.entrypoint)
    if args.cmd:
        config["Cmd"] = json.loads(args.cmd)
    if args.workdir:
        config["WorkingDir"] = args.workdir
    if labels:
        config["Labels"] = dict(sorted(labels.items()))
    if ports:
        config["ExposedPorts"] = {p: {} for p in sorted(set(ports))}

    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(args.output))) as tmp:
        blobs = os.path.join(tmp, "blobs", "sha256")
        os.makedirs(blobs)
        layers = list(args.layer)
        if args.add or args.dir or args.file or args.symlink:
            extra = os.path.join(tmp, "extra.tar")
            extra_layer(args, extra)
            layers.append(extra)
        descriptors, diff_ids = [], []
        for layer in layers:
            digest = sha256_file(layer)
            target = os.path.join(blobs, digest)
            if not os.path.exists(target):
                os.link(layer, target) if os.stat(layer).st_dev == os.stat(tmp).st_dev else _copy(layer, target)
            descriptors.append({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                "digest": "sha256:" + digest, "size": os.path.getsize(layer)})
            diff_ids.append("sha256:" + digest)

        def blob(obj):
            data = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
            digest = hashlib.sha256(data).hexdigest()
            with open(os.path.join(blobs, digest), "wb") as f:
                f.write(data)
            return digest, len(data)

        cfg_digest, cfg_size = blob({"architecture": "amd64", "os": "linux", "config": config,
                                     "rootfs": {"type": "layers", "diff_ids": diff_ids}})
        man_digest, man_size = blob({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                     "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                                "digest": "sha256:" + cfg_digest, "size": cfg_size},
                                     "layers": descriptors})
        digest_file = args.output + ".digest"
        if os.path.exists(args.output) and os.path.exists(digest_file) and open(digest_file).read().strip() == man_digest:
            print(f"{args.name}: unchanged sha256:{man_digest}")
            return
        with open(os.path.join(tmp, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        with open(os.path.join(tmp, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                       "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                      "digest": "sha256:" + man_digest, "size": man_size,
                                      "annotations": {"io.containerd.image.name": args.name,
                                                      "org.opencontainers.image.ref.name": args.name.rsplit(":", 1)[-1]}}]}, f)
        partial = args.output + ".partial"
        with tarfile.open(partial, "w") as tar:
            for name in ["oci-layout", "index.json", "blobs"]:
                tar.add(os.path.join(tmp, name), arcname=name)
        os.replace(partial, args.output)
        with open(digest_file, "w") as f:
            f.write(man_digest + "\n")
        print(f"{args.name}: built sha256:{man_digest} ({os.path.getsize(args.output) >> 20} MiB)")


def _copy(src, dst):
    with open(src, "rb") as a, open(dst, "wb") as b:
        while chunk := a.read(1 << 20):
            b.write(chunk)


def inspect(path):
    with tarfile.open(path) as tar:
        index = json.load(tar.extractfile("index.json"))
        blob = lambda d: tar.extractfile("blobs/sha256/" + d.split(":", 1)[1])
        manifest = json.load(blob(index["manifests"][0]["digest"]))
        config = json.load(blob(manifest["config"]["digest"]))["config"]
        with tarfile.open(fileobj=blob(manifest["layers"][-1]["digest"])) as top:
            files = sorted("/" + m.name.lstrip("./") for m in top.getmembers()
                           if m.isfile() and m.name.lstrip("./").startswith(("usr/local/bin/", "usr/share/doc/shop/")))
    return {"files": files, "user": config.get("User", ""), "entrypoint": config.get("Entrypoint"),
            "cmd": config.get("Cmd"), "exposed_ports": sorted(config.get("ExposedPorts", {})),
            "labels": config.get("Labels", {})}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("output")
    b.add_argument("--name", required=True)
    for flag in ["layer", "add", "dir", "file", "symlink", "env", "expose", "label"]:
        b.add_argument("--" + flag, action="append", default=[])
    for flag in ["entrypoint", "cmd", "user", "workdir", "dockerfile"]:
        b.add_argument("--" + flag)
    sub.add_parser("describe").add_argument("dockerfile")
    sub.add_parser("inspect").add_argument("archive")
    args = parser.parse_args()
    if args.command == "build":
        build(args)
    elif args.command == "describe":
        print(json.dumps(dockerfile_final_stage(args.dockerfile), indent=2, sort_keys=True))
    else:
        print(json.dumps(inspect(args.archive), indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
