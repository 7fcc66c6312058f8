#!/usr/bin/env python3
"""A Hugging Face Hub-compatible HTTP server on loopback, for Sluice's model-cache tests.

    python fake_hub.py --port PORT --spec SPEC.json --log LOG.jsonl [--cdn-port PORT2] [--memory]
    python fake_hub.py --spec SPEC.json --manifest     # print each file's size/sha256/git oid/etag

Standard library only. Binds 127.0.0.1; prints `listening on PORT` (the hub; PORT may be 0) then
`cdn listening on PORT2` on stdout, flushed, and serves until killed. LFS bytes come from a
second listener, the "CDN", on its own port: a different origin, as cdn-lfs.hf.co is to
huggingface.co (see 3 below for why that matters).

SPEC.json:
    {"repos": {"org/name": {
        "revisions": {"main": "<40 hex>", "v1.0": "<40 hex>"},  # a branch/tag, or the commit itself
        "token": null | "hf_...",   # required as `Authorization: Bearer hf_...`
        "gated": false,             # with a token: gated (metadata public, files need the token)
                                    # rather than private (the whole repo looks missing)
        "files": [{"path": "config.json", "size": 1234, "lfs": false, "seed": 1},
                  {"path": "tokenizer.json", "content": "literal UTF-8 text"},
                  {"path": "model.safetensors", "size": 50000000, "lfs": true, "seed": 2,
                   "corrupt": true,         # serve one byte flipped; hashes stay the true ones
                   "stall_after": 7000000,  # a GET/Range reaching byte N sends [start, N) and
                   "stall_times": 1}]}},    # holds the connection (first 1 such request; -1: all)
     "tokens": ["hf_..."],      # more valid tokens (users without access); others are invalid
     "latency_ms": 0, "tree_page_size": 1000, "stall_hold_s": 600, "url_ttl_s": 21600}
File bytes: 1 MiB block k of seed S is SHAKE-256(b"sluice-fake-hub/S/k") (1 MiB output); a file
is its blocks concatenated, cut to `size`. About 350 MB/s to generate; hashes at startup.
Generated again for every request (64 blocks are cached), so the server, not the client, sets
the pace of a large download; with --memory each file's bytes are kept in memory from the
startup hashing on (as much memory as the files' total size) and requests are served from
there, for throughput benchmarks (bench/models.py).

LOG.jsonl: one line per request, written and flushed as it ends: t, server ("hub"|"cdn"),
method, path (raw, no query), query, range (the Range header), authorization (sent or not),
status, bytes (body bytes sent), start (first byte served), repo, file, revision, error (the
X-Error-Code or message), stalled / aborted (client went away), ms.

THE PROTOCOL, as huggingface_hub 2.4.0 (PyPI) speaks it; observed against this server with
tests/py/hub_check.py (its snapshot_download) and read in its source. {rev} is
quote(rev, safe="") (so refs/pr/1 -> refs%2Fpr%2F1), {path} is quote(path) ('/' kept).

1. GET /api/models/{repo}/revision/{rev}            (skipped when rev is already a 40-hex commit)
   -> 200 JSON; the client needs only "sha", the commit. ("siblings": [{"rfilename"}], with
   ?blobs=true also size, blobId and lfs {sha256, size, pointerSize}.)
2. GET /api/models/{repo}/tree/{commit}?recursive=true&expand=false
   -> 200 JSON array: {"type": "file", "path", "size", "oid": <git blob sha1>,
   "lfs": {"oid": <sha256>, "size", "pointerSize"} (LFS only)} and {"type": "directory", ...}.
   Paginated: while a response has `Link: <absolute URL>; rel="next"`, GET that URL (it
   carries an opaque `cursor`); the hub pages at 1000 entries. The client stores the listing
   as trees/<commit>.json and skips this call when that file exists.
3. Per file, 8 in parallel: HEAD /{repo}/resolve/{commit}/{path}
   (with Accept-Encoding: identity, and Authorization: Bearer <token> when there is one)
   - regular file: 200, X-Repo-Commit: <commit>, ETag: "<git blob sha1>", Content-Length.
   - LFS file: 302, X-Repo-Commit, X-Linked-Etag: "<sha256>", X-Linked-Size: <size>, ETag,
     Location: <absolute URL on the CDN origin, signed: ...?response-content-disposition=
     ...&Expires=...&Signature=...; a missing/bad/expired signature gets 403>.
   The client takes commit = X-Repo-Commit (required), etag = X-Linked-Etag or ETag without
   quotes or W/, size = X-Linked-Size or Content-Length. It follows a redirect only while it
   stays on the same origin (the hub's 307 for a renamed repo) and then reads those headers
   from the final response; a redirect to another origin ends the HEAD. Hence the CDN port.
4. GET the bytes: a regular file from the same resolve URL (200, served by the hub); an LFS
   file from the Location URL exactly as given, query string included, and WITHOUT the
   Authorization header (dropped for another origin). Responses carry Accept-Ranges: bytes;
   `Range: bytes=N-` (or N-M, or -N) gets 206 with Content-Range, past the end gets 416.
   On a read timeout (HF_HUB_DOWNLOAD_TIMEOUT, 10 s) or a dropped connection the client retries
   up to 5 times with `Range: bytes=<received>-`, counting only whole 10 MiB chunks it has
   written, and starts the file over if the answer is 200. It checks only the byte count: it
   does NOT hash the file, so a same-size corrupt file ends up in the cache. Its temp file
   (blobs/<etag>.<random>.incomplete) is deleted on failure: no resume across processes.
5. The cache it writes under cache_dir: models--{org}--{name}/blobs/<etag> (etag: sha256 of an
   LFS file, git blob sha1 of another), snapshots/<commit>/<path> -> ../../blobs/<etag>
   (relative symlinks), refs/<rev> = the commit (no newline; not written when rev is a
   commit), trees/<commit>.json ({"format_version": 1, "files": {path: {size, blob_id,
   lfs_sha256?, lfs_size?}}}), .no_exist/<commit>/<path> after an EntryNotFound; .locks/ and
   CACHEDIR.TAG at the top. A second snapshot_download of a branch sends only request 1.
   Offline (HF_HUB_OFFLINE=1, or local_files_only): no requests; refs/<rev> gives the commit;
   if trees/<commit>.json exists every file in it must be in the snapshot, else
   IncompleteSnapshotError; without it the snapshot folder is taken as it is.
   A single hf_hub_download(repo, file) sends only 3 and 4 (with the branch name in the URL;
   X-Repo-Commit gives the commit).

Errors: status, X-Error-Code, X-Error-Message headers and a {"error": message} body; the
client picks its exception by the code and shows the message.
- Missing repo, or private without access: 401 RepoNotFound without a token, 404 RepoNotFound
  with a valid token (the same for /api and /resolve).
- A token the hub does not know: 401, no code, "Invalid credentials in Authorization header"
  (the client raises a plain HfHubHTTPError with that message), even on a public repo.
- Gated: /api info and tree are public; resolve is 401 GatedRepo without a token, 403 GatedRepo
  with a token that has no access.
- Unknown revision: 404 RevisionNotFound, "Invalid rev id: <rev>".
- Unknown file: 404 EntryNotFound, with X-Repo-Commit.
(The client, telemetry on, may also GET /api/agent-harnesses; served as an empty registry.)

A MINIMAL DOWNLOADER (what Sluice's needs, against this server or the hub): 1 for the commit;
2 for every path, size and expected hash (lfs.oid = sha256, else oid = git blob sha1 of
"blob <size>\0" + bytes; these are also the blob names), following Link; then per file GET
/{repo}/resolve/{commit}/{path} with the Bearer token, following a 302 (to the CDN: drop the
token, keep the query) — HEAD is not needed, 2 already gives etag and size; resume with
`Range: bytes=<have>-` and require 206 with a matching Content-Range; verify the hash itself;
lay the cache out as in 5 (write trees/<commit>.json too, so offline clients can tell an
incomplete snapshot).
"""

import argparse
import base64
import functools
import hashlib
import hmac
import json
import os
import select
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

BLOCK = 1 << 20  # generated content comes in 1 MiB blocks
# Signs the CDN URLs handed out in `Location`; fixed, so a URL outlives a restart of the server
# (on the same --cdn-port) until it expires.
SIGNING_KEY = b"sluice-fake-hub"


@functools.lru_cache(maxsize=64)
def _block(seed, k):
    """Block k (1 MiB) of the content of every file with this seed: SHAKE-256 of a fixed label."""
    return hashlib.shake_256(f"sluice-fake-hub/{seed}/{k}".encode()).digest(BLOCK)


class Blob:
    """The bytes of one file: generated from (seed, size), or a literal `content` string."""

    def __init__(self, entry):
        if "content" in entry:
            self.literal = entry["content"].encode()
            self.size = len(self.literal)
        else:
            self.literal = None
            self.size = int(entry["size"])
        # --memory: the whole true content, kept after the startup hashing and served from here.
        self.data = None
        self.seed = entry.get("seed", 0)
        # A corrupt file is served with one byte flipped (the advertised hashes stay those of the
        # true content), so the size checks pass and only a checksum can tell.
        self.flip_at = self.size // 2 if entry.get("corrupt") and self.size > 0 else None

    def true_chunks(self, start=0, end=None):
        """The true content of bytes [start, end), in chunks of at most one block."""
        end = self.size if end is None else end
        if self.literal is not None:
            for i in range(start, end, BLOCK):
                yield self.literal[i : min(end, i + BLOCK)]
            return
        if self.data is not None:
            # Slices of a memoryview: no copy of the bytes on the way to the socket.
            whole = memoryview(self.data)
            for i in range(start, end, BLOCK):
                yield whole[i : min(end, i + BLOCK)]
            return
        pos = start
        while pos < end:
            k, off = divmod(pos, BLOCK)
            chunk = _block(self.seed, k)[off : off + min(BLOCK - off, end - pos)]
            yield chunk
            pos += len(chunk)

    def served_chunks(self, start, end):
        """What the server sends for bytes [start, end): the true content, except for a corrupt file."""
        pos = start
        for chunk in self.true_chunks(start, end):
            if self.flip_at is not None and pos <= self.flip_at < pos + len(chunk):
                i = self.flip_at - pos
                chunk = bytes(chunk)
                chunk = chunk[:i] + bytes([chunk[i] ^ 0xFF]) + chunk[i + 1 :]
            yield chunk
            pos += len(chunk)


class File:
    def __init__(self, entry):
        self.path = entry["path"].strip("/")
        self.lfs = bool(entry.get("lfs", False))
        self.corrupt = bool(entry.get("corrupt", False))
        self.blob = Blob(entry)
        self.size = self.blob.size
        self.stall_after = entry.get("stall_after")
        # How many requests stall at `stall_after` (default 1: the first one; -1: all of them).
        self.stalls_left = int(entry.get("stall_times", 1))
        self.lock = threading.Lock()
        self.sha256 = self.git_oid = self.pointer = None

    def compute_hashes(self, keep=False):
        """The file's digests; with `keep`, its bytes stay in memory to be served from there."""
        sha256 = hashlib.sha256()
        blob_sha1 = hashlib.sha1(b"blob %d\0" % self.size)
        data = bytearray(self.size) if keep and self.blob.literal is None else None
        pos = 0
        for chunk in self.blob.true_chunks():
            sha256.update(chunk)
            blob_sha1.update(chunk)
            if data is not None:
                data[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
        if data is not None:
            self.blob.data = data
        self.sha256 = sha256.hexdigest()
        if self.lfs:
            # The git blob of an LFS file is its pointer file; the tree's `oid` is that blob's sha1.
            self.pointer = (
                "version https://git-lfs.github.com/spec/v1\n"
                f"oid sha256:{self.sha256}\nsize {self.size}\n"
            ).encode()
            self.git_oid = hashlib.sha1(b"blob %d\0" % len(self.pointer) + self.pointer).hexdigest()
        else:
            self.git_oid = blob_sha1.hexdigest()

    @property
    def etag(self):
        """The hub's ETag for the file: the sha256 of an LFS file, the git blob sha1 otherwise."""
        return self.sha256 if self.lfs else self.git_oid

    def claim_stall(self, start, end):
        """Whether a request for bytes [start, end) stops at `stall_after` (and uses up a stall)."""
        if self.stall_after is None or not start <= self.stall_after < end:
            return False
        with self.lock:
            if self.stalls_left == 0:
                return False
            self.stalls_left -= 1
            return True

    def tree_entry(self):
        entry = {"type": "file", "oid": self.git_oid, "size": self.size, "path": self.path}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": len(self.pointer)}
        return entry

    def manifest(self):
        return {
            "path": self.path,
            "size": self.size,
            "lfs": self.lfs,
            "sha256": self.sha256,
            "git_oid": self.git_oid,
            "etag": self.etag,
            "corrupt": self.corrupt,
        }


class Repo:
    def __init__(self, repo_id, spec):
        self.id = repo_id
        self.revisions = dict(spec.get("revisions") or {"main": hashlib.sha1(repo_id.encode()).hexdigest()})
        self.token = spec.get("token")
        self.gated = bool(spec.get("gated", False)) and self.token is not None
        self.files = [File(e) for e in spec.get("files", [])]
        self.by_path = {f.path: f for f in self.files}
        self.dirs = sorted(
            {"/".join(f.path.split("/")[:i]) for f in self.files for i in range(1, f.path.count("/") + 1)}
        )

    def index(self):
        self.by_sha256 = {}
        for f in self.files:
            if f.lfs:
                self.by_sha256.setdefault(f.sha256, f)

    def commit_for(self, revision):
        if revision in self.revisions:
            return self.revisions[revision]
        if revision in self.revisions.values():
            return revision
        return None

    def tree(self):
        """All entries (files and folders) of the repo, sorted by path."""
        entries = [f.tree_entry() for f in self.files]
        for d in self.dirs:
            oid = hashlib.sha1(f"tree {self.id}/{d}".encode()).hexdigest()
            entries.append({"type": "directory", "oid": oid, "size": 0, "path": d})
        return sorted(entries, key=lambda e: e["path"])

    def info(self, commit, blobs):
        siblings = []
        for f in sorted(self.files, key=lambda f: f.path):
            sibling = {"rfilename": f.path}
            if blobs:
                sibling.update(size=f.size, blobId=f.git_oid)
                if f.lfs:
                    sibling["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": len(f.pointer)}
            siblings.append(sibling)
        author = self.id.split("/")[0] if "/" in self.id else None
        return {
            "_id": hashlib.sha1(self.id.encode()).hexdigest()[:24],
            "id": self.id,
            "modelId": self.id,
            "author": author,
            "sha": commit,
            "lastModified": "2025-01-01T00:00:00.000Z",
            "createdAt": "2025-01-01T00:00:00.000Z",
            "private": self.token is not None and not self.gated,
            "gated": "manual" if self.gated else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(f.size for f in self.files),
        }


class Hub:
    def __init__(self, spec, log_path, memory=False):
        self.repos = {rid: Repo(rid, r) for rid, r in spec.get("repos", {}).items()}
        self.tokens = {r.token for r in self.repos.values() if r.token is not None}
        self.tokens.update(spec.get("tokens", []))  # more valid tokens: valid users without access
        self.latency_s = float(spec.get("latency_ms", 0)) / 1000
        self.tree_page_size = int(spec.get("tree_page_size", 1000))
        self.stall_hold_s = float(spec.get("stall_hold_s", 600))
        self.url_ttl_s = float(spec.get("url_ttl_s", 6 * 3600))  # lifetime of a signed CDN URL
        files = [f for r in self.repos.values() for f in r.files]
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            list(pool.map(lambda f: f.compute_hashes(keep=memory), files))
        for r in self.repos.values():
            r.index()
        self.log_file = open(log_path, "a", encoding="utf-8") if log_path else None
        self.log_lock = threading.Lock()
        self.cdn_origin = None
        self.stopping = threading.Event()

    def log(self, record):
        if self.log_file is None:
            return
        line = json.dumps(record, sort_keys=True)
        with self.log_lock:
            self.log_file.write(line + "\n")
            self.log_file.flush()

    def find_repo(self, segments):
        """Split the leading segments naming a repo off `segments`: (repo id, Repo or None, rest)."""
        if len(segments) >= 2 and "/".join(segments[:2]) in self.repos:
            return "/".join(segments[:2]), self.repos["/".join(segments[:2])], segments[2:]
        if segments and segments[0] in self.repos:
            return segments[0], self.repos[segments[0]], segments[1:]
        n = 2 if len(segments) >= 2 else 1
        return "/".join(segments[:n]), None, segments[n:]

    def sign(self, path, expires, disposition):
        msg = f"{path}\n{expires}\n{disposition}".encode()
        return hmac.new(SIGNING_KEY, msg, hashlib.sha256).hexdigest()[:40]

    def cdn_url(self, repo, f):
        path = f"/repos/{quote(repo.id)}/{f.sha256}"
        name = f.path.rsplit("/", 1)[-1]
        disposition = f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name}\";"
        expires = int(time.time() + self.url_ttl_s)
        query = (
            f"response-content-disposition={quote(disposition, safe='')}"
            f"&Expires={expires}&Signature={self.sign(path, expires, disposition)}"
        )
        return f"{self.cdn_origin}{path}?{query}"


class ClientGone(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-hub/1"
    hub: Hub = None  # set per server class
    role = "hub"

    def log_message(self, format, *args):  # keep stderr quiet; LOG.jsonl records the requests
        pass

    def do_GET(self):
        self.dispatch()

    def do_HEAD(self):
        self.dispatch()

    def do_POST(self):
        self.close_connection = True
        self.dispatch(unsupported=True)

    do_PUT = do_DELETE = do_POST

    # Request handling

    def dispatch(self, unsupported=False):
        started = time.time()
        split = urlsplit(self.path)
        self.rec = {
            "t": round(started, 6),
            "server": self.role,
            "method": self.command,
            "path": split.path,
            "query": split.query,
            "range": self.headers.get("Range"),
            "authorization": self.headers.get("Authorization") is not None,
            "status": None,
            "bytes": 0,
        }
        self.query = parse_qs(split.query)
        try:
            if self.hub.latency_s:
                time.sleep(self.hub.latency_s)
            segments = [unquote(s) for s in split.path.split("/")[1:]]
            if unsupported:
                self.error(405, None, "Method not allowed")
            elif self.role == "cdn":
                self.route_cdn(split.path, segments)
            else:
                self.route_hub(segments)
        except (ClientGone, BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.rec["aborted"] = True
            self.close_connection = True
        finally:
            self.rec["ms"] = round((time.time() - started) * 1000, 1)
            self.hub.log(self.rec)

    def route_hub(self, segments):
        if segments == ["api", "agent-harnesses"]:
            # The client's telemetry reads this registry (at most daily, unless telemetry is off).
            return self.send_json(200, {"standardEnvVars": [], "harnesses": {}})
        if segments[:1] == ["api"] and len(segments) >= 3:
            if segments[1] != "models":  # datasets, spaces: none here
                return self.error(*self.repo_not_found())
            repo_id, repo, rest = self.hub.find_repo(segments[2:])
            self.rec["repo"] = repo_id
            if not rest:
                return self.api_info(repo, "main")
            if rest[0] == "revision" and len(rest) == 2:
                return self.api_info(repo, rest[1])
            if rest[0] == "tree" and len(rest) >= 2:
                return self.api_tree(repo, rest[1], "/".join(rest[2:]).strip("/"))
            return self.error(404, None, "Not Found")
        if "resolve" in segments:
            i = segments.index("resolve")
            repo_id, repo, rest = self.hub.find_repo(segments[:i])
            if i == 0 or rest or len(segments) < i + 3:
                return self.error(404, None, "Not Found")
            self.rec["repo"] = repo_id
            return self.resolve(repo, segments[i + 1], "/".join(segments[i + 2 :]))
        return self.error(404, None, "Not Found")

    # Authorization, as the hub answers it

    def repo_not_found(self):
        token = self.bearer()
        status = 404 if token in self.hub.tokens else 401
        return status, "RepoNotFound", "Repository not found"

    def bearer(self):
        value = self.headers.get("Authorization")
        if value is None:
            return None
        scheme, _, token = value.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else value

    def check_access(self, repo, for_content):
        """None if the request may see the repo (its files too if `for_content`), else the error."""
        token = self.bearer()
        if token is not None and token not in self.hub.tokens:
            # No error code: the client reports the message, not "repository not found".
            return 401, None, "Invalid credentials in Authorization header"
        if repo is None:
            return self.repo_not_found()
        if repo.token is None or token == repo.token:
            return None
        if not repo.gated:
            return self.repo_not_found()  # private: indistinguishable from missing
        if not for_content:
            return None  # a gated repo's metadata and file list are public
        if token is None:
            return 401, "GatedRepo", (
                f"Access to model {repo.id} is restricted. You must have access to it and be "
                "authenticated to access it. Please log in."
            )
        return 403, "GatedRepo", (
            f"Access to model {repo.id} is restricted and you are not in the authorized list. "
            f"Visit {self.hub_origin()}/{repo.id} to ask for access."
        )

    def commit_or_error(self, repo, revision):
        commit = repo.commit_for(revision)
        if commit is None:
            self.error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return commit

    # Endpoints

    def api_info(self, repo, revision):
        denied = self.check_access(repo, for_content=False)
        if denied:
            return self.error(*denied)
        commit = self.commit_or_error(repo, revision)
        if commit is None:
            return
        blobs = self.query.get("blobs", ["false"])[0].lower() in ("1", "true")
        self.send_json(200, repo.info(commit, blobs))

    def api_tree(self, repo, revision, path):
        denied = self.check_access(repo, for_content=False)
        if denied:
            return self.error(*denied)
        commit = self.commit_or_error(repo, revision)
        if commit is None:
            return
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        entries = repo.tree()
        if path:
            if path not in repo.dirs:
                return self.error(404, "EntryNotFound", f"{path} does not exist on \"{revision}\"",
                                  {"X-Repo-Commit": commit})
            entries = [e for e in entries if e["path"].startswith(path + "/")]
        depth = path.count("/") + 1 if path else 0
        if not recursive:
            entries = [e for e in entries if e["path"].count("/") == depth]
        offset = 0
        cursor = self.query.get("cursor", [None])[0]
        if cursor:
            try:
                offset = json.loads(base64.urlsafe_b64decode(cursor.encode()))["offset"]
            except (ValueError, KeyError, TypeError):
                return self.error(400, None, "Invalid cursor")
        page = entries[offset : offset + self.hub.tree_page_size]
        headers = {}
        if offset + self.hub.tree_page_size < len(entries):
            nxt = base64.urlsafe_b64encode(json.dumps({"offset": offset + len(page)}).encode()).decode()
            params = {k: v[0] for k, v in self.query.items() if k != "cursor"}
            params["cursor"] = nxt
            qs = "&".join(f"{k}={quote(str(v), safe='')}" for k, v in params.items())
            url = f"{self.hub_origin()}{urlsplit(self.path).path}?{qs}"
            headers["Link"] = f'<{url}>; rel="next"'
        self.send_json(200, page, headers)

    def resolve(self, repo, revision, path):
        self.rec["revision"] = revision
        self.rec["file"] = path
        denied = self.check_access(repo, for_content=True)
        if denied:
            return self.error(*denied)
        commit = self.commit_or_error(repo, revision)
        if commit is None:
            return
        f = repo.by_path.get(path)
        if f is None:
            return self.error(404, "EntryNotFound", "Entry not found", {"X-Repo-Commit": commit})
        headers = {"X-Repo-Commit": commit, "ETag": f'"{f.etag}"', "Accept-Ranges": "bytes"}
        if f.lfs:
            location = self.hub.cdn_url(repo, f)
            headers.update({
                "X-Linked-Etag": f'"{f.sha256}"',
                "X-Linked-Size": str(f.size),
                "Location": location,
            })
            body = f"Found. Redirecting to {location}".encode()
            return self.send_body(302, body, "text/plain; charset=utf-8", headers)
        name = path.rsplit("/", 1)[-1]
        headers["Content-Disposition"] = f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name}\";"
        self.serve_file(f, headers)

    def route_cdn(self, raw_path, segments):
        if len(segments) < 3 or segments[0] != "repos":
            return self.cdn_error(404, "NoSuchKey")
        try:
            expires = int(self.query["Expires"][0])
            signature = self.query["Signature"][0]
            disposition = self.query.get("response-content-disposition", [""])[0]
        except (KeyError, ValueError):
            return self.cdn_error(403, "MissingKey")
        if not hmac.compare_digest(signature, self.hub.sign(raw_path, expires, disposition)):
            return self.cdn_error(403, "AccessDenied")
        if expires < time.time():
            return self.cdn_error(403, "AccessDenied")  # expired URL
        repo = self.hub.repos.get("/".join(segments[1:-1]))
        f = repo.by_sha256.get(segments[-1]) if repo else None
        if f is None:
            return self.cdn_error(404, "NoSuchKey")
        self.rec["repo"] = repo.id
        self.rec["file"] = f.path
        headers = {"Accept-Ranges": "bytes"}
        if disposition:
            headers["Content-Disposition"] = disposition
        self.serve_file(f, headers)

    # Responses

    def hub_origin(self):
        return f"http://{self.headers.get('Host') or '%s:%d' % self.server.server_address[:2]}"

    def error(self, status, code, message, headers=None):
        headers = dict(headers or {})
        if code:
            headers["X-Error-Code"] = code
        headers["X-Error-Message"] = message
        self.rec["error"] = code or message
        self.send_json(status, {"error": message}, headers)

    def cdn_error(self, status, code):
        body = f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code></Error>".encode()
        self.send_body(status, body, "application/xml", {})

    def send_json(self, status, obj, headers=None):
        self.send_body(status, json.dumps(obj).encode(), "application/json; charset=utf-8", headers or {})

    def send_body(self, status, body, content_type, headers):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Request-Id", f"Root=1-fake-{os.urandom(6).hex()}")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.rec["status"] = status
        if self.command != "HEAD":
            self.wfile.write(body)
            self.rec["bytes"] = len(body)

    def serve_file(self, f, headers):
        """Send a file's bytes, honouring a single `Range: bytes=` range, and the stall knob."""
        size = f.size
        start, end, status = 0, size, 200
        wanted = self.headers.get("Range")
        if wanted:
            parsed = parse_range(wanted, size)
            if parsed == "unsatisfiable":
                return self.send_body(416, b"", "text/plain", {**headers, "Content-Range": f"bytes */{size}"})
            if parsed is not None:
                start, end = parsed
                status = 206
                headers = {**headers, "Content-Range": f"bytes {start}-{end - 1}/{size}"}
        self.rec["start"] = start
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start))
        self.send_header("X-Request-Id", f"Root=1-fake-{os.urandom(6).hex()}")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.rec["status"] = status
        if self.command == "HEAD":
            return
        stop = f.stall_after if f.claim_stall(start, end) else end
        sent = 0
        try:
            for chunk in f.blob.served_chunks(start, stop):
                self.wfile.write(chunk)
                sent += len(chunk)
        finally:
            self.rec["bytes"] = sent
        if stop < end:
            self.rec["stalled"] = True
            self.close_connection = True
            self.hold()
            raise ClientGone()

    def hold(self):
        """Send nothing more and keep the connection open until the client goes away."""
        deadline = time.time() + self.hub.stall_hold_s
        sock = self.connection
        while time.time() < deadline and not self.hub.stopping.is_set():
            readable, _, _ = select.select([sock], [], [], 0.25)
            if readable:
                try:
                    if not sock.recv(1, socket.MSG_PEEK):
                        return  # the client closed the connection
                except OSError:
                    return
                time.sleep(0.25)  # it sent something (it should not): keep holding


def parse_range(value, size):
    """(start, end) for a single `bytes=` range, None to ignore the header, or 'unsatisfiable'."""
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return "unsatisfiable"
            return max(0, size - n), size
        start = int(first)
        end = min(size, int(last) + 1) if last else size
    except ValueError:
        return None
    if start >= size or end <= start:
        return "unsatisfiable"
    return start, end


def make_server(hub, role, port):
    handler = type(f"{role.title()}Handler", (Handler,), {"hub": hub, "role": role})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    return server


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cdn-port", type=int, default=0)
    parser.add_argument("--spec", required=True)
    parser.add_argument("--log")
    parser.add_argument("--memory", action="store_true",
                        help="keep every file's bytes in memory and serve them from there (benchmarks: "
                             "generating them per request would be slower than the client)")
    parser.add_argument("--manifest", action="store_true",
                        help="print every file's size, sha256, git oid and ETag as JSON and exit")
    args = parser.parse_args()
    with open(args.spec, encoding="utf-8") as fh:
        spec = json.load(fh)
    hub = Hub(spec, None if args.manifest else args.log, memory=args.memory and not args.manifest)
    if args.manifest:
        out = {"repos": {rid: {"revisions": r.revisions, "files": [f.manifest() for f in r.files]}
                         for rid, r in hub.repos.items()}}
        json.dump(out, sys.stdout, indent=1)
        print()
        return
    hub_server = make_server(hub, "hub", args.port)
    cdn_server = make_server(hub, "cdn", args.cdn_port)
    hub.cdn_origin = "http://127.0.0.1:%d" % cdn_server.server_address[1]
    threading.Thread(target=cdn_server.serve_forever, daemon=True).start()
    print(f"listening on {hub_server.server_address[1]}", flush=True)
    print(f"cdn listening on {cdn_server.server_address[1]}", flush=True)
    try:
        hub_server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        hub.stopping.set()


if __name__ == "__main__":
    main()
