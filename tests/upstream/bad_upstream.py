#!/usr/bin/python3
"""tests/upstream/bad_upstream.py: a registry-shaped server that corrupts.

It serves GET/HEAD /v2/ (200, no auth) and one image in each of these
repositories, each with its own config and one layer of --size
pseudo-random bytes:

  library/good    everything right (the control)
  library/wrong   the layer blob has wrong bytes of the right length (the
                  last byte is flipped, so a client learns it only at the end)
  library/trunc   the layer blob says Content-Length N, sends N/2 bytes and
                  closes the connection
  library/badman  the manifest is served with other bytes than its digest
                  (a changed annotation), by tag and by digest
  library/redir   wants a Bearer token (realm /token on this server); its
                  layer blob is a 307 to http://localhost:PORT/cdn/<digest>,
                  another host name, like a CDN
  library/loop    its layer blob redirects to itself, forever
  library/ftp     its layer blob redirects to an ftp:// URL
  library/trickle its layer blob sends 64 KiB, then a byte every
                  --trickle-delay seconds (0.5), and logs
                  "TRICKLE-END <digest> sent=N" when the peer goes away
  library/slowhead every answer sends its status line, then its headers a
                  byte every --trickle-delay seconds
  library/endless its layer blob has no Content-Length and never ends
                  (the body ends with the connection), 64 KiB at a time;
                  it logs "ENDLESS-END sent=N" when the peer goes away
  library/elsewhere its layer blob is a 307 to --elsewhere URL/cdn/<digest>
                  (another server: one on another loopback address)
  library/refs    answers /v2/library/refs/referrers/<its manifest> with an
                  index of two referrers (an SPDX SBOM and a signature),
                  artifact manifests it serves by digest
  library/reftag  has no referrers API (404), but the fallback tag
                  sha256-<hex of its manifest> is an index of one referrer
  tokelse/<any>   any name: wants a Bearer token whose realm is
                  --elsewhere URL/token
  tok<N>/<any>    any name: wants a Bearer token from /token?size=N, which
                  hands out a token of N bytes for the scope; with one,
                  every manifest is 404 MANIFEST_UNKNOWN

Blobs are found by digest in any repository; what a blob's bytes look like
depends on the repository it was made for.  Bodies are sent in 64 KiB
chunks with --chunk-delay seconds between them, so that concurrent clients
overlap.  The digests are written as JSON to --info:

  {"library/good": {"manifest": "sha256:..", "media_type": "..",
                    "config": "sha256:..", "layer": "sha256:..",
                    "layer_size": N, "mode": "good"}, ...}

and every request appends "<METHOD> <PATH> <STATUS> auth=<yes|no>" to
--log (auth: whether an Authorization header came with it).  Every 200
with a body carries "ratelimit-remaining: 99;w=21600", as Docker Hub's do.  With --hold S
every manifest answer waits S seconds first, and the log gets
"INFLIGHT max=N" each time more requests than ever wait at once.
Standard library only.
"""

import argparse
import hashlib
import http.server
import json
import os
import re
import socket
import threading
import time
import urllib.parse

MT_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MODES = {"library/good": "good", "library/wrong": "wrong",
         "library/trunc": "trunc", "library/badman": "badman",
         "library/redir": "redir", "library/loop": "loop",
         "library/ftp": "ftp", "library/trickle": "trickle",
         "library/slowhead": "slowhead", "library/endless": "endless",
         "library/elsewhere": "elsewhere", "library/refs": "refs",
         "library/reftag": "reftag"}
MT_INDEX = "application/vnd.oci.image.index.v1+json"
MT_EMPTY = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
REF_TYPES = {"library/refs": ["application/spdx+json",
                              "application/vnd.dev.cosign.artifact.sig.v1+json"],
             "library/reftag": ["application/spdx+json"]}
TOKEN = "bad-upstream-token"
CHUNK = 65536
LOG_LOCK = threading.Lock()


def sha256(data):
    """The OCI digest of bytes."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def pseudo_random(seed, size):
    """Deterministic incompressible bytes: SHA-256 in counter mode."""
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha256(b"%s-%d" % (seed.encode(), i)).digest()
        i += 1
    return bytes(out[:size])


def make_repo(name, mode, size):
    """Builds one repository's blobs and manifest."""
    layer = pseudo_random(name, size)
    config = json.dumps({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/true"], "Labels": {"repo": name}},
        "rootfs": {"type": "layers", "diff_ids": [sha256(layer)]},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": MT_MANIFEST,
        "config": {"mediaType": MT_CONFIG, "digest": sha256(config),
                   "size": len(config)},
        "layers": [{"mediaType": MT_LAYER, "digest": sha256(layer),
                    "size": len(layer)}],
    }, sort_keys=True).encode()
    served = manifest
    if mode == "badman":
        served = manifest.replace(b'"schemaVersion": 2',
                                  b'"annotations": {"x": "y"}, '
                                  b'"schemaVersion": 2')
    repo = {"name": name, "mode": mode, "layer": layer, "config": config,
            "manifest": manifest, "served_manifest": served, "extra": {}}
    # Referrers: artifact manifests whose subject is this manifest.
    refs = []
    for i, at in enumerate(REF_TYPES.get(name, [])):
        art = json.dumps({
            "schemaVersion": 2, "mediaType": MT_MANIFEST,
            "artifactType": at,
            "config": {"mediaType": MT_EMPTY, "digest": sha256(EMPTY),
                       "size": len(EMPTY)},
            "layers": [{"mediaType": MT_EMPTY, "digest": sha256(EMPTY),
                        "size": len(EMPTY)}],
            "subject": {"mediaType": MT_MANIFEST, "digest": sha256(manifest),
                        "size": len(manifest)},
            "annotations": {"n": str(i)},
        }, sort_keys=True).encode()
        repo["extra"][sha256(art)] = art
        refs.append({"mediaType": MT_MANIFEST, "digest": sha256(art),
                     "size": len(art), "artifactType": at})
    repo["referrers"] = json.dumps({
        "schemaVersion": 2, "mediaType": MT_INDEX, "manifests": refs,
    }, sort_keys=True).encode()
    return repo


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "test-bad-upstream/1"
    # Headers and body go out in two writes: without this, Nagle and the
    # peer's delayed ACK hold each small answer back 40 ms.
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        pass

    def log_req(self, status):
        with LOG_LOCK:
            with open(self.server.cfg.log, "a") as f:
                f.write("%s %s %d auth=%s\n" % (
                    self.command, self.path, status,
                    "yes" if self.headers.get("Authorization") else "no"))

    def error(self, status, code, msg):
        body = json.dumps({"errors": [{"code": code, "message": msg}]})
        body = body.encode()
        self.log_req(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_line(self, line):
        with LOG_LOCK:
            with open(self.server.cfg.log, "a") as f:
                f.write(line + "\n")

    def send_trickle(self, data):
        """64 KiB, then a byte at a time, until the peer goes away."""
        sent = 0
        try:
            self.wfile.write(data[:CHUNK])
            self.wfile.flush()
            sent = CHUNK
            while sent < len(data):
                time.sleep(self.server.cfg.trickle_delay)
                self.wfile.write(data[sent:sent + 1])
                self.wfile.flush()
                sent += 1
        except OSError:
            pass
        self.close_connection = True
        self.log_line("TRICKLE-END %s sent=%d" % (sha256(data), sent))

    def send_endless(self, data):
        """A body with no end: the layer's bytes over and over."""
        sent = 0
        try:
            while True:
                self.wfile.write(data[:CHUNK])
                sent += CHUNK
        except OSError:
            pass
        self.close_connection = True
        self.log_line("ENDLESS-END sent=%d" % sent)

    def send_body(self, data, mode):
        """Writes a body in chunks, corrupting or cutting it per mode."""
        if mode == "trickle":
            self.send_trickle(data)
            return
        delay = self.server.cfg.chunk_delay
        if mode == "wrong":
            data = data[:-1] + bytes([data[-1] ^ 0xff])
        limit = len(data) // 2 if mode == "trunc" else len(data)
        off = 0
        try:
            while off < limit:
                n = min(CHUNK, limit - off)
                self.wfile.write(data[off:off + n])
                self.wfile.flush()
                off += n
                if delay and off < limit:
                    time.sleep(delay)
            if mode == "trunc":
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
        except OSError:
            self.close_connection = True

    def challenge(self, name):
        """A 401 that sends the client to this server's own token realm."""
        port = self.server.server_address[1]
        self.log_req(401)
        self.send_response(401)
        self.send_header("WWW-Authenticate",
                         'Bearer realm="http://127.0.0.1:%d/token",'
                         'service="bad",scope="repository:%s:pull"'
                         % (port, name))
        self.send_header("Content-Length", "0")
        self.end_headers()

    def redirect(self, location):
        self.log_req(307)
        self.send_response(307)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def reply(self, data, media_type, digest, mode="good"):
        self.log_req(200)
        if mode == "endless":
            self.send_response(200)
            self.send_header("Content-Type", media_type)
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.send_endless(data)
            return
        self.send_response(200)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Docker-Content-Digest", digest)
        # As Docker Hub does: what is left of the pull rate limit.
        self.send_header("ratelimit-remaining", "99;w=21600")
        self.end_headers()
        if self.command != "HEAD":
            self.send_body(data, mode)

    def do_GET(self):
        if self.server.cfg.hold > 0 and "/manifests/" in self.path:
            self.held()
            return
        self.answer()

    def held(self):
        """A manifest answer that waits --hold seconds, counting how many
        wait at once: "INFLIGHT max=N" is logged each time N grows."""
        srv = self.server
        with LOG_LOCK:
            srv.inflight += 1
            grew = srv.inflight > srv.maxinflight
            srv.maxinflight = max(srv.maxinflight, srv.inflight)
        if grew:
            self.log_line("INFLIGHT max=%d" % srv.maxinflight)
        try:
            time.sleep(srv.cfg.hold)
            self.answer()
        finally:
            with LOG_LOCK:
                srv.inflight -= 1

    def answer(self):
        path = self.path.split("?", 1)[0]
        if path == "/v2/" or path == "/v2":
            body = b"{}"
            self.log_req(200)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.send_header("Docker-Distribution-API-Version",
                             "registry/2.0")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return
        if path == "/token":
            q = urllib.parse.parse_qs(self.path.partition("?")[2])
            tok = TOKEN
            if "size" in q:
                scope = q.get("scope", [""])[0]
                head = "T" + hashlib.sha256(scope.encode()).hexdigest()
                n = int(q["size"][0])
                tok = (head + "x" * n)[:max(n, 1)]
            body = json.dumps({"token": tok, "expires_in": 300}).encode()
            self.log_req(200)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if path.startswith("/cdn/"):
            for r in self.server.repos.values():
                if path[5:] == sha256(r["layer"]):
                    self.reply(r["layer"], "application/octet-stream",
                               path[5:])
                    return
            self.error(404, "BLOB_UNKNOWN", "blob unknown")
            return
        m = re.match(r"^/v2/(tokelse/[a-z0-9]+)/manifests/", path)
        if m and self.server.cfg.elsewhere:
            self.log_req(401)
            self.send_response(401)
            self.send_header("WWW-Authenticate",
                             'Bearer realm="%s/token",'
                             'service="bad",scope="repository:%s:pull"'
                             % (self.server.cfg.elsewhere, m.group(1)))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        m = re.match(r"^/v2/(tok([0-9]+)/[a-z0-9]+)/manifests/", path)
        if m:
            if (self.headers.get("Authorization") or "").startswith(
                    "Bearer T"):
                self.error(404, "MANIFEST_UNKNOWN", "manifest unknown")
                return
            port = self.server.server_address[1]
            self.log_req(401)
            self.send_response(401)
            self.send_header("WWW-Authenticate",
                             'Bearer realm="http://127.0.0.1:%d/token?size=%s",'
                             'service="bad",scope="repository:%s:pull"'
                             % (port, m.group(2), m.group(1)))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        for name, repo in self.server.repos.items():
            pre = "/v2/" + name + "/"
            if path.startswith(pre) and repo["mode"] == "slowhead":
                self.slow_head()
                return
            if path.startswith(pre):
                if repo["mode"] == "redir" and \
                        self.headers.get("Authorization") != "Bearer " + TOKEN:
                    self.challenge(name)
                    return
                self.serve_repo(repo, path[len(pre):])
                return
        self.error(404, "NAME_UNKNOWN", "repository name not known")

    def do_HEAD(self):
        self.do_GET()

    def slow_head(self):
        """A status line, then headers that never quite arrive."""
        self.log_req(200)
        head = b"Content-Type: application/json\r\nX-Padding: " + \
            b"x" * 4096 + b"\r\n\r\n"
        sent = 0
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            self.wfile.flush()
            while sent < len(head):
                time.sleep(self.server.cfg.trickle_delay)
                self.wfile.write(head[sent:sent + 1])
                self.wfile.flush()
                sent += 1
        except OSError:
            pass
        self.close_connection = True
        self.log_line("SLOWHEAD-END sent=%d" % sent)

    def serve_repo(self, repo, rest):
        kind, _, ref = rest.partition("/")
        ref = ref.split("?")[0]
        if kind == "referrers" and repo["mode"] == "refs" and \
                ref == sha256(repo["manifest"]):
            self.reply(repo["referrers"], MT_INDEX, sha256(repo["referrers"]))
            return
        if kind == "referrers":
            self.error(404, "NAME_UNKNOWN", "unknown path")
            return
        if kind == "manifests" and repo["mode"] == "reftag" and \
                ref == "sha256-" + sha256(repo["manifest"])[7:]:
            self.reply(repo["referrers"], MT_INDEX, sha256(repo["referrers"]))
            return
        if kind == "manifests" and ref in repo["extra"]:
            self.reply(repo["extra"][ref], MT_MANIFEST, ref)
            return
        if kind == "blobs" and ref == sha256(EMPTY):
            self.reply(EMPTY, MT_EMPTY, ref)
            return
        if kind == "manifests" and ref in ("latest", sha256(repo["manifest"])):
            self.reply(repo["served_manifest"], MT_MANIFEST,
                       sha256(repo["manifest"]))
            return
        if kind == "manifests":
            self.error(404, "MANIFEST_UNKNOWN", "manifest unknown")
            return
        if kind != "blobs":
            self.error(404, "NAME_UNKNOWN", "unknown path")
            return
        for r in self.server.repos.values():
            if ref == sha256(r["config"]):
                self.reply(r["config"], "application/octet-stream", ref)
                return
            if ref == sha256(r["layer"]) and r["mode"] == "redir":
                self.redirect("http://localhost:%d/cdn/%s"
                              % (self.server.server_address[1], ref))
                return
            if ref == sha256(r["layer"]) and r["mode"] == "elsewhere" and \
                    self.server.cfg.elsewhere:
                self.redirect("%s/cdn/%s" % (self.server.cfg.elsewhere, ref))
                return
            if ref == sha256(r["layer"]) and r["mode"] == "loop":
                self.redirect(self.path.split("?")[0] + "?hop=%f"
                              % time.time())
                return
            if ref == sha256(r["layer"]) and r["mode"] == "ftp":
                self.redirect("ftp://127.0.0.1/" + ref)
                return
            if ref == sha256(r["layer"]):
                mode = r["mode"] if r["mode"] in (
                    "wrong", "trunc", "trickle", "endless") else "good"
                self.reply(r["layer"], "application/octet-stream", ref, mode)
                return
        self.error(404, "BLOB_UNKNOWN", "blob unknown")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--log", required=True)
    ap.add_argument("--info", required=True)
    ap.add_argument("--port-file")
    ap.add_argument("--size", type=int, default=4 * 1024 * 1024)
    ap.add_argument("--chunk-delay", type=float, default=0.0)
    ap.add_argument("--trickle-delay", type=float, default=0.5)
    ap.add_argument("--elsewhere", default="")
    ap.add_argument("--hold", type=float, default=0.0)
    cfg = ap.parse_args()
    repos = {n: make_repo(n, m, cfg.size) for n, m in MODES.items()}
    info = {n: {"manifest": sha256(r["manifest"]), "media_type": MT_MANIFEST,
                "served_manifest": sha256(r["served_manifest"]),
                "config": sha256(r["config"]), "layer": sha256(r["layer"]),
                "layer_size": len(r["layer"]), "mode": r["mode"],
                "referrers": sorted(r["extra"])}
            for n, r in repos.items()}
    with open(cfg.info + ".tmp", "w") as f:
        json.dump(info, f, indent=1)
    os.rename(cfg.info + ".tmp", cfg.info)
    open(cfg.log, "a").close()
    host, _, port = cfg.listen.rpartition(":")
    srv = http.server.ThreadingHTTPServer((host, int(port)), Handler)
    srv.daemon_threads = True
    srv.cfg = cfg
    srv.repos = repos
    srv.inflight = 0
    srv.maxinflight = 0
    if cfg.port_file:
        with open(cfg.port_file + ".tmp", "w") as f:
            f.write("%d\n" % srv.server_address[1])
        os.rename(cfg.port_file + ".tmp", cfg.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
