# tests/e2e_policy.sh: the --policy file end to end: upstream repository
# globs, Nix attribute globs and nix.max_packages answer 403 DENIED naming
# the rule; limits.max_blob_bytes refuses a blob by its Content-Length and,
# without one, while it streams, storing nothing; a full build queue answers
# 429 with Retry-After; SIGHUP with a broken file keeps the old policy, with
# a valid one changes behaviour; a client outside clients.allow is refused.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"
. "$NM_TOP/tests/upstream/lib_upstream.sh"

need curl jq python3

POL=$NM_WORK/policy.json

# Sends SIGHUP and waits (10 s at most) for the daemon to log a line
# containing TEXT that it had not logged before: hup_wait TEXT.
hup_wait()
{
	_before=$(grep -cF -- "$1" "$NM_LOG" || true)
	kill -HUP "$NM_PID" || fail "SIGHUP: daemon gone"
	_i=0
	while [ "$(grep -cF -- "$1" "$NM_LOG" || true)" -le "$_before" ]; do
		nm_alive "$NM_PID" || fail "daemon died on SIGHUP"
		[ "$_i" -lt 100 ] || { bad "no '$1' in the log 10 s after SIGHUP"; return 1; }
		sleep 0.1
		_i=$((_i + 1))
	done
	ok "SIGHUP logged '$1'"
}

# Checks a request is refused with 403 DENIED and a message containing
# NEEDLE: denied WHAT NEEDLE URL [curl args...].
denied()
{
	_what=$1 _needle=$2 _url=$3
	shift 3
	_st=$(http_status "$_url" "$@")
	nm_check_error "$_what" 403 "$_st" DENIED
	check_contains "$_what: message names the rule" "$_needle" \
	    "$(nm_error_message)"
}

# Checks a request is not refused by the policy: its status is not 403.
not_denied()
{
	_st=$(http_status "$2" -H "$ACCEPT_DOCKER")
	check_ne "$1: not 403" 403 "$_st"
}

# A registry-shaped upstream that sends one blob of $2 bytes with chunked
# encoding (no Content-Length); writes its port to $1 and the blob's digest
# to $1.digest.
cat >"$NM_WORK/chunky.py" <<'EOF'
import hashlib, http.server, os, sys
port_file, size = sys.argv[1], int(sys.argv[2])
data = (bytes(range(256)) * (size // 256 + 1))[:size]
dg = "sha256:" + hashlib.sha256(data).hexdigest()

class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        p = self.path.split("?")[0]
        if p in ("/v2/", "/v2"):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")
        elif p.endswith("/blobs/" + dg):
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(data), 65536):
                c = data[i:i + 65536]
                self.wfile.write(b"%x\r\n" % len(c) + c + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
with open(port_file + ".digest", "w") as f:
    f.write(dg)
with open(port_file + ".tmp", "w") as f:
    f.write(str(s.server_address[1]))
os.rename(port_file + ".tmp", port_file)
s.serve_forever()
EOF

# The upstreams: bad_upstream.py (4 MiB layers with a Content-Length) for
# docker.io, chunky.py (a 2 MiB blob without one) for quay.io.
up_bad_start
mkdir -p "$NM_WORK/chunky"
python3 "$NM_WORK/chunky.py" "$NM_WORK/chunky/port" 2097152 \
    >"$NM_WORK/chunky/err" 2>&1 </dev/null &
CHUNKY_PID=$!
nm_track "$CHUNKY_PID"
NM_LOGS="$NM_LOGS $NM_WORK/chunky/err"
up_wait_file "$NM_WORK/chunky/port" "$CHUNKY_PID" "chunky upstream"
CHUNKY_URL=http://127.0.0.1:$(cat "$NM_WORK/chunky/port")
CHUNKY_DG=$(cat "$NM_WORK/chunky/port.digest")

# A policy that does not parse fails the start, naming the key.
cat >"$POL" <<'EOF'
{ "upstreams": { "docker.io": { "deny": "library/big*" } } }
EOF
rc=0
NIXMIRROR_OFFLINE=1 "$NM_BIN" serve --listen "127.0.0.1:$(nm_free_port)" \
    --data "$NM_WORK/data0" --pkgs-path "$NM_PKGS" --policy "$POL" \
    >"$NM_WORK/start.err" 2>&1 </dev/null || rc=$?
check_ne "a broken policy fails the start" 0 "$rc"
check_contains "the start error names the key" "upstreams.docker.io.deny" \
    "$(cat "$NM_WORK/start.err")"

# The first policy.
cat >"$POL" <<'EOF'
{
  "upstreams": { "docker.io": { "allow": ["library/*", "myorg/*"],
                                "deny": ["library/big*"] } },
  "nix": { "allow": ["*"], "deny": ["haskellPackages.*"], "max_packages": 2 },
  "limits": { "max_blob_bytes": 1048576 }
}
EOF
nm_start --policy "$POL" --upstream "docker.io=$UP_BAD_URL" \
    --upstream "quay.io=$CHUNKY_URL"
DATA=$NM_DATA
grep -qF "policy loaded from $POL" "$NM_LOG" && ok "the start logs the policy" ||
    bad "no 'policy loaded from $POL' in the log"

GOOD_M=$(up_bad_info library/good manifest)
GOOD_L=$(up_bad_info library/good layer)
GOOD_C=$(up_bad_info library/good config)

# Upstream globs: deny wins over allow; short names are library/ names;
# manifests and blobs alike; nothing reaches the upstream.
n0=$(wc -l <"$UP_BAD_LOG")
denied "library/bigimg manifest" \
    'denied by upstreams.docker.io.deny "library/big*"' \
    "$NM_URL/v2/library/bigimg/manifests/latest" -H "$ACCEPT_DOCKER"
denied "bigimg (short name) blob" \
    'docker.io/library/bigimg is denied by upstreams.docker.io.deny' \
    "$NM_URL/v2/bigimg/blobs/$GOOD_L"
denied "other/thing manifest" \
    'docker.io/other/thing is not in upstreams.docker.io.allow' \
    "$NM_URL/v2/other/thing/manifests/latest" -H "$ACCEPT_DOCKER"
st=$(http_status "$NM_URL/v2/other/thing/manifests/latest" -I)
check_eq "HEAD other/thing manifest status" 403 "$st"
check_eq "denied requests never reached the upstream" "$n0" \
    "$(wc -l <"$UP_BAD_LOG")"

# An allowed repository works.
st=$(http_status "$NM_URL/v2/library/good/manifests/latest" -H "$ACCEPT_OCI")
check_eq "library/good manifest (allowed) status" 200 "$st"
check_eq "library/good manifest digest" "$GOOD_M" "$(nm_sha256 "$NM_BODY")"
st=$(http_status "$NM_URL/v2/library/good/blobs/$GOOD_C")
check_eq "library/good config blob (small) status" 200 "$st"

# limits.max_blob_bytes from the Content-Length: refused before any byte.
denied "4 MiB layer over max_blob_bytes" \
    "is 4194304 bytes, over the policy's limits.max_blob_bytes 1048576" \
    "$NM_URL/v2/library/good/blobs/$GOOD_L"
up_check_not_stored "over-limit layer" "$DATA" "$GOOD_L"
# ...and while streaming, when there is no Content-Length.
denied "2 MiB chunked blob over max_blob_bytes" \
    "over the policy's limits.max_blob_bytes 1048576" \
    "$NM_URL/v2/x/chunky/blobs/$CHUNKY_DG?ns=quay.io"
up_check_not_stored "over-limit chunked blob" "$DATA" "$CHUNKY_DG"

# Nix: deny globs match attribute paths without regard to case; the count
# of packages (after "shell" is expanded) is limited.
denied "nix haskellpackages.pandoc" \
    'package haskellpackages.pandoc is denied by nix.deny "haskellPackages.*"' \
    "$NM_URL/v2/nix/haskellpackages.pandoc/manifests/latest" \
    -H "$ACCEPT_DOCKER"
denied "nix hello/figlet/cowsay (3 packages)" \
    "3 packages, over the policy's nix.max_packages 2" \
    "$NM_URL/v2/nix/hello/figlet/cowsay/manifests/latest" -H "$ACCEPT_DOCKER"
denied "nix shell (4 packages)" "nix.max_packages 2" \
    "$NM_URL/v2/nix/shell/manifests/latest" -H "$ACCEPT_DOCKER"
check_eq "no build for denied Nix images" 0 "$(nm_builds)"
st=$(http_status "$NM_URL/v2/nix/hello/manifests/latest" -H "$ACCEPT_DOCKER")
check_eq "nix/hello (allowed) status" 200 "$st"

# SIGHUP with a broken file: logged, the old policy stays in force.
printf '{ "nix": { "deny": ["hello"] }, "limits": { "max_blob_bytes": -1 } }\n' \
    >"$POL"
hup_wait "not reloaded"
check_contains "the log says why and that the old one stays" \
    "limits.max_blob_bytes" "$(grep -F "not reloaded" "$NM_LOG" | tail -n 1)"
check_contains "the log says the old one stays" "keeping the old one" \
    "$(grep -F "not reloaded" "$NM_LOG" | tail -n 1)"
denied "library/bigimg after a broken reload" "upstreams.docker.io.deny" \
    "$NM_URL/v2/library/bigimg/manifests/latest" -H "$ACCEPT_DOCKER"
st=$(http_status "$NM_URL/v2/nix/hello/manifests/latest" -H "$ACCEPT_DOCKER")
check_eq "nix/hello still allowed after a broken reload" 200 "$st"
denied "the blob limit still holds after a broken reload" "max_blob_bytes" \
    "$NM_URL/v2/library/good/blobs/$GOOD_L"
printf '{ not json\n' >"$POL"
hup_wait "not reloaded"
denied "library/bigimg after a reload of non-JSON" "upstreams.docker.io.deny" \
    "$NM_URL/v2/library/bigimg/manifests/latest" -H "$ACCEPT_DOCKER"

# SIGHUP with a valid file: the new rules apply at once.
cat >"$POL" <<'EOF'
{
  "upstreams": { "*": { "deny": ["library/wrong"] } },
  "nix": { "deny": ["hello"] },
  "limits": { "max_concurrent_builds": 1 }
}
EOF
hup_wait "policy reloaded from $POL"
not_denied "library/bigimg after the reload" \
    "$NM_URL/v2/library/bigimg/manifests/latest"
denied "library/wrong after the reload" \
    'docker.io/library/wrong is denied by upstreams.*.deny "library/wrong"' \
    "$NM_URL/v2/library/wrong/manifests/latest" -H "$ACCEPT_DOCKER"
denied "nix/hello after the reload" 'package hello is denied by nix.deny "hello"' \
    "$NM_URL/v2/nix/hello/manifests/latest" -H "$ACCEPT_DOCKER"
st=$(http_status "$NM_URL/v2/nix/haskellpackages.pandoc/manifests/latest" \
    -H "$ACCEPT_DOCKER")
check_eq "nix haskellpackages.pandoc allowed after the reload" 200 "$st"
st=$(http_status "$NM_URL/v2/library/good/blobs/$GOOD_L")
check_eq "the 4 MiB layer without a blob limit: status" 200 "$st"
check_eq "the 4 MiB layer: digest" "$GOOD_L" "$(nm_sha256 "$NM_BODY")"
st=$(http_status "$NM_URL/v2/x/chunky/blobs/$CHUNKY_DG?ns=quay.io")
check_eq "the chunked blob without a blob limit: status" 200 "$st"
check_eq "the chunked blob: digest" "$CHUNKY_DG" "$(nm_sha256 "$NM_BODY")"

# A full build queue: with one build at a time, at most 4 wait; the other
# requests get 429 TOOMANYREQUESTS with Retry-After at once.
i=0 qpids=""
for n in figlet cowsay nano moreutils coreutils busybox figlet/cowsay \
    figlet/nano cowsay/nano nano/moreutils figlet/moreutils cowsay/moreutils; do
	i=$((i + 1))
	curl -s -o "$NM_WORK/q$i.body" -D "$NM_WORK/q$i.hdrs" \
	    -w '%{http_code}' --max-time 300 -H "$ACCEPT_DOCKER" \
	    "$NM_URL/v2/nix/$n/manifests/latest" >"$NM_WORK/q$i.st" 2>&1 &
	qpids="$qpids $!"
done
# shellcheck disable=SC2086
wait $qpids
n200=0 n429=0 nother=0 retry=1
for j in $(seq 1 "$i"); do
	case $(cat "$NM_WORK/q$j.st") in
	200) n200=$((n200 + 1)) ;;
	429)
		n429=$((n429 + 1))
		grep -qi '^Retry-After: 10' "$NM_WORK/q$j.hdrs" || retry=0
		[ "$(jq -r '.errors[0].code' "$NM_WORK/q$j.body")" = \
		    TOOMANYREQUESTS ] || retry=0
		;;
	*) nother=$((nother + 1)) ;;
	esac
done
[ "$n429" -ge 1 ] && ok "a full build queue answers 429 ($n429 of $i)" ||
    bad "no 429 among $i concurrent builds with max_concurrent_builds 1"
check_eq "every 429 has Retry-After: 10 and TOOMANYREQUESTS" 1 "$retry"
[ "$n200" -ge 5 ] && ok "the running build and 4 queued ones finished ($n200)" ||
    bad "only $n200 of $i builds answered 200"
check_eq "no other status in the queue test" 0 "$nother"

# clients.allow: a client bound to 127.0.0.2 is refused, 127.0.0.1 is not.
# (The check is made per connection, in proxy/server.c.)
cat >"$POL" <<'EOF'
{ "clients": { "allow": ["127.0.0.1/32", "::1/128"] } }
EOF
hup_wait "policy reloaded from $POL"
st=$(http_status "$NM_URL/v2/" --interface 127.0.0.2)
nm_check_error "a client at 127.0.0.2" 403 "$st" DENIED
check_contains "the message names clients.allow" "not in clients.allow" \
    "$(nm_error_message)"
st=$(http_status "$NM_URL/v2/" --interface 127.0.0.1)
check_eq "a client at 127.0.0.1 status" 200 "$st"

# clients.proxies: a balancer's X-Forwarded-For names the client whose
# rules apply (the rightmost address that is not a balancer's), and its
# connections are not held to max_connections_per_client. Others' is
# not believed.
# Holds N connections from 127.0.0.1 open at once, each with a request:
# prints how many got 200 and how many 429.
conns()
{
	python3 - "$NM_PORT" "$1" <<'PYEOF2'
import socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
held = [socket.create_connection(("127.0.0.1", port), 5) for i in range(n)]
for s in held:
    s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
codes = []
for s in held:
    s.settimeout(5)
    codes.append(s.recv(64).split(b" ")[1].decode())
print("%d %d" % (codes.count("200"), codes.count("429")))
PYEOF2
}
cat >"$POL" <<'EOF'
{ "clients": { "deny": ["10.9.9.0/24"] },
  "limits": { "max_connections_per_client": 2 } }
EOF
hup_wait "policy reloaded from $POL"
check_eq "without clients.proxies, X-Forwarded-For is not believed" 200 \
    "$(http_status "$NM_URL/v2/" -H 'X-Forwarded-For: 10.9.9.9')"
check_eq "without it, a third connection from one address is refused" "2 2" "$(conns 4)"
cat >"$POL" <<'EOF'
{ "clients": { "deny": ["10.9.9.0/24"], "proxies": ["127.0.0.1/32"] },
  "limits": { "max_connections_per_client": 2 } }
EOF
hup_wait "policy reloaded from $POL"
st=$(http_status "$NM_URL/v2/" -H 'X-Forwarded-For: 10.9.9.9')
nm_check_error "a denied client through the balancer" 403 "$st" DENIED
check_contains "the message names the forwarded client" \
    "client 10.9.9.9 is denied by clients.deny" "$(nm_error_message)"
check_eq "an allowed client through the balancer" 200 \
    "$(http_status "$NM_URL/v2/" -H 'X-Forwarded-For: 10.1.1.1')"
check_contains "the log names the forwarded client" '10.1.1.1 GET "/v2/" 200' \
    "$(cat "$NM_LOG")"
st=$(http_status "$NM_URL/v2/" -H 'X-Forwarded-For: 10.1.1.1, 10.9.9.9')
nm_check_error "the address the balancer added counts, not the client's own" \
    403 "$st" DENIED
check_eq "an address a client put before its own is not believed" 200 \
    "$(http_status "$NM_URL/v2/" -H 'X-Forwarded-For: 10.9.9.9, 10.1.1.1')"
st=$(http_status "$NM_URL/v2/" -H 'X-Forwarded-For: 10.9.9.9, 127.0.0.1')
nm_check_error "a chain of balancers is walked back" 403 "$st" DENIED
check_eq "the balancer's own request (no header)" 200 "$(http_status "$NM_URL/v2/")"
st=$(http_status "$NM_URL/v2/" -H 'X-Forwarded-For: unknown')
nm_check_error "a balancer's header that names no address" 403 "$st" DENIED
st=$(http_status "$NM_URL/v2/" -H 'X-Forwarded-For: 10.9.9.9' -H 'X-Forwarded-For: 10.1.1.1')
check_eq "two header lines are one list (the last one counts)" 200 "$st"
st=$(http_status "$NM_URL/v2/" -H 'X-Forwarded-For: 10.1.1.1' -H 'X-Forwarded-For: 10.9.9.9')
nm_check_error "a client's own line before the balancer's is not believed" \
    403 "$st" DENIED
st=$(http_status "$NM_URL/metrics" -H 'X-Forwarded-For: 192.0.2.7')
nm_check_error "a remote client through the balancer gets no /metrics" 403 "$st" DENIED
check_eq "the balancer is not held to max_connections_per_client" "4 0" "$(conns 4)"

nm_stop
