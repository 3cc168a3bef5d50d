#!/usr/bin/python3
"""tests/upstream/token_issuer.py: a token server shaped like auth.docker.io.

GET /token?service=S&scope=repository:NAME:pull[,push] answers
{"token", "access_token", "expires_in": 300, "issued_at"} with a JWT (RS256)
that CNCF distribution's `auth: token` accepts: signed with --key, whose
self-signed certificate (--cert) is in the JWT header's x5c and is the
registry's rootcertbundle.  Anonymous requests get pull only; push needs
HTTP Basic with --user/--password.  --require-auth refuses anonymous
requests altogether; --private PREFIX (repeatable) gives anonymous
requests no access to names starting with PREFIX (the registry then
answers 401 even with the token).  Every request appends one line to --log:

  <unix time> GET <path> scope=<decoded scopes, ;-separated> user=<name|-> basic=<raw header|-> status=<code>
      granted=<type:name:actions;...> ua=<User-Agent without blanks>

Standard library only; signing is done by the openssl command.
"""

import argparse
import base64
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.parse

LOG_LOCK = threading.Lock()


def b64url(data):
    """Base64url without padding, as JOSE wants it."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def pem_to_der_b64(path):
    """The standard base64 of a PEM certificate's DER, for x5c."""
    with open(path) as f:
        text = f.read()
    m = re.search(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----",
                  text, re.S)
    if not m:
        sys.exit("token_issuer: no certificate in " + path)
    return "".join(m.group(1).split())


def sign(key, data):
    """RS256: PKCS#1 v1.5 signature over SHA-256, by the openssl command."""
    p = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key],
                       input=data, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, check=False)
    if p.returncode != 0:
        raise RuntimeError("openssl dgst failed: " +
                           p.stderr.decode(errors="replace"))
    return p.stdout


def parse_scope(scope):
    """repository:NAME:pull,push -> (type, name, [actions]) or None."""
    parts = scope.split(":")
    if len(parts) < 3:
        return None
    typ, actions = parts[0], parts[-1]
    name = ":".join(parts[1:-1])
    return typ, name, [a for a in actions.split(",") if a]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "test-token-issuer/1"

    def log_message(self, fmt, *args):
        pass

    def log_line(self, user, basic, status, granted):
        cfg = self.server.cfg
        ua = "".join(self.headers.get("User-Agent", "-").split()) or "-"
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        scopes = ";".join("".join(s.split()) for s in q.get("scope", []))
        line = ("%d %s %s scope=%s user=%s basic=%s status=%d granted=%s "
                "ua=%s\n" % (int(time.time()), self.command, self.path,
                              scopes or "-", user or "-", basic or "-",
                              status, ";".join(granted) or "-", ua))
        with LOG_LOCK:
            with open(cfg.log, "a") as f:
                f.write(line)

    def reply(self, status, obj, extra=None):
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def basic_user(self):
        """(user, raw header, authenticated) from an Authorization header."""
        raw = self.headers.get("Authorization")
        if not raw:
            return None, None, False
        if not raw.lower().startswith("basic "):
            return "?", raw.replace(" ", "_"), False
        try:
            dec = base64.b64decode(raw[6:].strip()).decode("utf-8", "replace")
        except ValueError:
            return "?", raw.replace(" ", "_"), False
        user, _, pw = dec.partition(":")
        cfg = self.server.cfg
        return (user, raw.replace(" ", "_"),
                user == cfg.user and pw == cfg.password)

    def do_GET(self):
        cfg = self.server.cfg
        url = urllib.parse.urlsplit(self.path)
        user, basic, authed = self.basic_user()
        if url.path != "/token":
            self.log_line(user, basic, 404, [])
            self.reply(404, {"details": "not found"})
            return
        if user is not None and not authed:
            self.log_line(user, basic, 401, [])
            self.reply(401, {"details": "incorrect username or password"},
                       {"WWW-Authenticate": 'Basic realm="test"'})
            return
        if cfg.require_auth and not authed:
            self.log_line(user, basic, 401, [])
            self.reply(401, {"details": "authentication required"},
                       {"WWW-Authenticate": 'Basic realm="test"'})
            return
        q = urllib.parse.parse_qs(url.query)
        service = q.get("service", [""])[0]
        access, granted = [], []
        for scope in q.get("scope", []):
            for one in scope.split(" "):
                p = parse_scope(one)
                if p is None:
                    continue
                typ, name, actions = p
                if not authed:
                    actions = [a for a in actions if a == "pull"]
                    if any(name.startswith(pre) for pre in cfg.private):
                        actions = []
                if typ != "repository":
                    actions = actions if authed else []
                access.append({"type": typ, "name": name,
                               "actions": actions})
                granted.append("%s:%s:%s" % (typ, name, ",".join(actions)))
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [cfg.x5c]}
        claims = {
            "iss": cfg.issuer,
            "sub": user if authed else "",
            "aud": service,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": b64url(os.urandom(12)),
            "access": access,
        }
        signing_input = (b64url(json.dumps(header).encode()) + "." +
                         b64url(json.dumps(claims).encode()))
        try:
            sig = sign(cfg.key, signing_input.encode())
        except RuntimeError as e:
            self.log_line(user, basic, 500, [])
            self.reply(500, {"details": str(e)})
            return
        token = signing_input + "." + b64url(sig)
        self.log_line(user, basic, 200, granted)
        self.reply(200, {
            "token": token,
            "access_token": token,
            "expires_in": 300,
            "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                       time.gmtime(now)),
        })

    do_HEAD = do_GET


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--key", required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--issuer", default="test-issuer")
    ap.add_argument("--log", required=True)
    ap.add_argument("--user", default="testuser")
    ap.add_argument("--password", default="testpass")
    ap.add_argument("--require-auth", action="store_true")
    ap.add_argument("--private", action="append", default=[],
                    help="names starting with this get no anonymous pull")
    ap.add_argument("--port-file", help="write the bound port here")
    cfg = ap.parse_args()
    cfg.x5c = pem_to_der_b64(cfg.cert)
    host, _, port = cfg.listen.rpartition(":")
    srv = http.server.ThreadingHTTPServer((host, int(port)), Handler)
    srv.daemon_threads = True
    srv.cfg = cfg
    if cfg.port_file:
        tmp = cfg.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % srv.server_address[1])
        os.rename(tmp, cfg.port_file)
    open(cfg.log, "a").close()
    srv.serve_forever()


if __name__ == "__main__":
    main()
