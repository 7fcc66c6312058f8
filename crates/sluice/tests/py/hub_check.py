#!/usr/bin/env python3
"""Download a repo with Hugging Face's own client (`huggingface_hub`), or read one from a cache
offline as a worker would, and print what it produced as JSON.

    HF_ENDPOINT=http://127.0.0.1:PORT hub_check.py REPO [--revision REV] --cache-dir DIR [--token T]
    HF_HUB_OFFLINE=1 HF_HUB_CACHE=DIR hub_check.py REPO [--revision REV] --offline [--load FILE]...

Online: `snapshot_download(REPO, revision=REV, cache_dir=DIR, token=T)`. Offline:
`snapshot_download(REPO, revision=REV, local_files_only=True)` against HF_HUB_CACHE, as a worker
does against a cache that Sluice staged. Either way it then reads every file of the snapshot and
checks it against the blob it links to (`blobs/<etag>`: the sha256 of an LFS file, the git blob
sha1 of another), and prints {"repo", "revision", "commit", "snapshot", "refs", "files": [{"path",
"size", "sha256", "blob", "verified"}], "all_verified"}. It starts no server. On an error: exit 1,
with `ExceptionType: message` on stderr. Offline, a file that does not match its blob is an error.
"""

import argparse
import hashlib
import json
import os
import re
import sys

# Before the import: huggingface_hub reads its settings when it is imported.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")

import huggingface_hub  # noqa: E402


def file_report(snapshot, rel):
    path = os.path.join(snapshot, rel)
    sha256 = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            sha256.update(chunk)
            size += len(chunk)
    blob = os.path.basename(os.path.realpath(path)) if os.path.islink(path) else None
    if blob is None:
        verified = None  # not a link into blobs/: nothing to check it against
    elif re.fullmatch(r"[0-9a-f]{64}", blob):
        verified = sha256.hexdigest() == blob
    else:
        git = hashlib.sha1(b"blob %d\0" % size)
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                git.update(chunk)
        verified = git.hexdigest() == blob
    return {"path": rel, "size": size, "sha256": sha256.hexdigest(), "blob": blob, "verified": verified}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("repo")
    parser.add_argument("--revision", default="main")
    parser.add_argument("--cache-dir")
    parser.add_argument("--token")
    parser.add_argument("--offline", action="store_true")
    # Also load single files the way transformers' `cached_file` does (hf_hub_download by repo
    # and file name, which offline resolves refs/<revision> and reads the snapshot).
    parser.add_argument("--load", action="append", default=[], metavar="FILE")
    args = parser.parse_args()

    if args.offline:
        if os.environ.get("HF_HUB_OFFLINE") != "1" or not os.environ.get("HF_HUB_CACHE"):
            sys.exit("--offline needs HF_HUB_OFFLINE=1 and HF_HUB_CACHE set")
        kwargs = {"local_files_only": True}
        if args.cache_dir:
            kwargs["cache_dir"] = args.cache_dir
    else:
        if not os.environ.get("HF_ENDPOINT") or not args.cache_dir:
            sys.exit("needs HF_ENDPOINT set and --cache-dir")
        kwargs = {"cache_dir": args.cache_dir, "token": args.token if args.token else False}

    try:
        snapshot = huggingface_hub.snapshot_download(args.repo, revision=args.revision, **kwargs)
        files = []
        for root, _dirs, names in os.walk(snapshot):
            for name in names:
                rel = os.path.relpath(os.path.join(root, name), snapshot).replace(os.sep, "/")
                files.append(file_report(snapshot, rel))
        files.sort(key=lambda f: f["path"])
        storage = os.path.dirname(os.path.dirname(snapshot))
        refs = {}
        refs_dir = os.path.join(storage, "refs")
        for root, _dirs, names in os.walk(refs_dir):
            for name in names:
                with open(os.path.join(root, name)) as fh:
                    refs[os.path.relpath(os.path.join(root, name), refs_dir)] = fh.read()
        report = {
            "huggingface_hub": huggingface_hub.__version__,
            "repo": args.repo,
            "revision": args.revision,
            "commit": os.path.basename(snapshot),
            "snapshot": snapshot,
            "refs": refs,
            "files": files,
            "all_verified": all(f["verified"] is not False for f in files),
        }
        loaded = {}
        for name in args.load:
            path = huggingface_hub.hf_hub_download(args.repo, name, revision=args.revision, **kwargs)
            with open(path, "rb") as fh:
                loaded[name] = hashlib.sha256(fh.read()).hexdigest()
        report["loaded"] = loaded
        if args.offline and not report["all_verified"]:
            bad = [f["path"] for f in files if f["verified"] is False]
            raise ValueError(f"files do not match their blobs: {bad}")
    except Exception as e:  # noqa: BLE001 - report any failure the way the tests read it
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    json.dump(report, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
