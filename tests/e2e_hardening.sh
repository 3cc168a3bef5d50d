# tests/e2e_hardening.sh: hostile clients.  Hundreds of stalled requests do
# not delay a normal pull; oversized heads and URIs, slow heads, push
# methods with bodies, malformed ranges, traversal digests and bytes that
# are not names all get their error, and the daemon keeps serving.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"

need curl jq /usr/bin/python3 sha256sum

# 300 stalled connections come from one address: the policy lets one
# client hold that many (the default is 64, checked at the end).
cat >"$NM_WORK/policy.json" <<EOF
{ "limits": { "max_connections": 1000, "max_connections_per_client": 400 } }
EOF
nm_start --policy "$NM_WORK/policy.json"
PORT=$NM_PORT
ACCEPT_OCI="Accept: application/vnd.oci.image.manifest.v1+json"

# Warm one image so the liveness check below measures serving, not Nix.
st=$(http_status "$NM_URL/v2/nix/hello/manifests/latest" -H "$ACCEPT_OCI")
check_eq "warm nix/hello" 200 "$st"
LAYER=$(jq -r '.layers[0].digest' "$NM_BODY")

# A raw-socket client: the scenarios that curl cannot produce.
cat >"$NM_WORK/hostile.py" <<'EOF'
import socket, sys, time, subprocess

port = int(sys.argv[1])
what = sys.argv[2]

def conn():
    s = socket.create_connection(("127.0.0.1", port))
    s.settimeout(20)
    return s

def status(s):
    data = b""
    while b"\r\n" not in data:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    line = data.split(b"\r\n")[0].decode("latin-1")
    return line.split(" ")[1] if line.startswith("HTTP/") else "none"

if what == "stall":
    # 300 connections that never finish their head, then a normal pull.
    held = []
    for i in range(300):
        s = conn()
        s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        held.append(s)
    t = time.time()
    url = "http://127.0.0.1:%d/v2/nix/hello/blobs/%s" % (port, sys.argv[3])
    out = subprocess.run(["curl", "-s", "-m", "30", url],
                         capture_output=True).stdout
    took = time.time() - t
    import hashlib
    ok = "sha256:" + hashlib.sha256(out).hexdigest() == sys.argv[3]
    print("pull %s %.2f" % ("ok" if ok else "bad", took))
    # The stalled ones are answered 408 when the head timeout passes.
    t = time.time()
    print("stalled %s %.1f" % (status(held[0]), time.time() - t))
    for s in held:
        s.close()
elif what == "put-no-body":
    # A push with a huge body announced: 405 without the body being read.
    s = conn()
    s.sendall(b"PUT /v2/nix/hello/manifests/latest HTTP/1.1\r\nHost: x\r\n"
              b"Content-Length: 1000000000\r\n\r\n")
    t = time.time()
    print("%s %.1f" % (status(s), time.time() - t))
elif what == "per-client":
    # Connections beyond the per-client limit get 429 with Retry-After.
    held = [conn() for i in range(int(sys.argv[3]))]
    for s in held:
        s.sendall(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
    codes = [status(s) for s in held]
    print("%d %d" % (codes.count("200"), codes.count("429")))
elif what == "many":
    # Holds N idle connections open for a few seconds.
    held = []
    for i in range(int(sys.argv[3])):
        try:
            held.append(socket.create_connection(("127.0.0.1", port), 2))
        except OSError:
            pass
    time.sleep(2)
    print(len(held))
    for s in held:
        s.close()
elif what == "strict":
    # Heads a front proxy could frame differently: status, and whether
    # the connection was closed after the answer.
    heads = [
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
        b"Content-Length: 0\r\n\r\n",
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
        b"Content-Length: 7\r\n\r\nGET /v2/",
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0, 0\r\n\r\n",
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"\r\n0\r\n\r\n",
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length : 0\r\n\r\n",
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\n\r\n",
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
        b"GET /v2/ HTTP/2.0\r\nHost: x\r\n\r\n",
        b"GET /v2/ HTTP/1.1x\r\nHost: x\r\n\r\n",
        b"GET /v2/\r\n\r\n",
        b"GET /v2/ HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"GET /v2/ HTTP/1.0\r\n\r\n",
    ]
    for h in heads:
        s = conn()
        s.sendall(h)
        code = status(s)
        closed = "open"
        if code != "200":
            s.settimeout(5)
            try:
                while s.recv(4096):
                    pass
                closed = "closed"
            except OSError:
                pass
        print(code, closed)
        s.close()
elif what == "raw-name":
    # Bytes that are no name: NUL, 0xff, a control character.
    for path in (b"/v2/nix/he\x00llo/manifests/latest",
                 b"/v2/nix/h\xffllo/manifests/latest",
                 b"/v2/nix/h\x01llo/manifests/latest"):
        s = conn()
        s.sendall(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        print(status(s))
        s.close()
EOF

out=$(/usr/bin/python3 "$NM_WORK/hostile.py" "$PORT" stall "$LAYER")
echo "$out"
pull=$(echo "$out" | awk '/^pull/ { print $2 }')
secs=$(echo "$out" | awk '/^pull/ { print $3 }')
check_eq "pull beside 300 stalled requests has the right bytes" ok "$pull"
# A liveness bound, not a benchmark: a stuck loop takes tens of seconds.
awk -v s="$secs" 'BEGIN { exit !(s < 5) }' ||
    bad "pull beside 300 stalled requests took ${secs}s"
check_eq "a stalled head gets 408" 408 \
    "$(echo "$out" | awk '/^stalled/ { print $2 }')"

# Strict heads: what a front proxy could frame differently is refused.
out=$(/usr/bin/python3 "$NM_WORK/hostile.py" "$PORT" strict)
set -- $out
for what in "two equal Content-Length" "two conflicting Content-Length" \
    "a Content-Length list" "Transfer-Encoding on GET" \
    "white space before the colon" "a folded header line" \
    "a GET with a body"; do
	check_eq "$what: 400, connection closed" "400 closed" "$1 $2"
	shift 2
done
check_eq "HTTP/2.0 on the wire: 505, closed" "505 closed" "$1 $2"
check_eq "HTTP/1.1x: 400, closed" "400 closed" "$3 $4"
check_eq "no version: 400, closed" "400 closed" "$5 $6"
check_eq "Content-Length: 0 on GET is fine" 200 "$7"
check_eq "HTTP/1.0 is fine" 200 "$9"
grep -q "guard 400 UNKNOWN: more than one Content-Length" "$NM_LOG" ||
    bad "the duplicate Content-Length is not logged"

# Oversized head and URI.
big=$(head -c 17000 /dev/zero | tr '\0' a)
st=$(http_status "$NM_URL/v2/" -H "X-Big: $big")
nm_check_error "17 KiB header" 431 "$st" UNKNOWN
long=$(head -c 5000 /dev/zero | tr '\0' a)
st=$(http_status "$NM_URL/v2/nix/$long/manifests/latest")
nm_check_error "5000-byte URI" 414 "$st" UNKNOWN
# Just under the limits is fine.
st=$(http_status "$NM_URL/v2/" -H "X-Big: $(head -c 15000 /dev/zero | tr '\0' a)")
check_eq "15 KB header" 200 "$st"

# Push methods: 405 at once, the body never read.
out=$(/usr/bin/python3 "$NM_WORK/hostile.py" "$PORT" put-no-body)
check_eq "PUT with a 1 GB body announced" 405 "${out%% *}"
awk -v s="${out#* }" 'BEGIN { exit !(s < 3) }' ||
    bad "405 came after ${out#* }s"
st=$(http_status "$NM_URL/v2/nix/hello/blobs/uploads/" -X POST -d x)
nm_check_error "POST upload" 405 "$st" UNSUPPORTED
check_eq "405 has Allow" "GET, HEAD" "$(hdr Allow)"

# Ranges: malformed ones are ignored (whole blob), outside ones are 416.
size=$(curl -s "$NM_URL/v2/nix/hello/blobs/$LAYER" | wc -c)
for r in "bytes=abc" "bytes=5-1" "items=0-1" "bytes=0-1,4-5" "bytes=--1" \
    "bytes=99999999999999999999999-"; do
	st=$(http_status "$NM_URL/v2/nix/hello/blobs/$LAYER" -H "Range: $r")
	check_eq "Range $r is ignored" 200 "$st"
	check_eq "Range $r gives the whole blob" "$size" "$(wc -c <"$NM_BODY")"
done
st=$(http_status "$NM_URL/v2/nix/hello/blobs/$LAYER" -H "Range: bytes=$size-")
check_eq "Range past the end" 416 "$st"
check_eq "416 Content-Range" "bytes */$size" "$(hdr Content-Range)"

# Traversal and malformed digests never reach the file system.
for d in "sha256:../../../../etc/passwd" "sha256:..%2f..%2fetc%2fpasswd" \
    "sha256:$(printf 'A%.0s' $(seq 64))" "sha512:abc" "../../etc/passwd"; do
	st=$(http_status "$NM_URL/v2/nix/hello/blobs/$d")
	case $st in
	400|404) ok "digest $d: $st" ;;
	*) bad "digest $d: status $st" ;;
	esac
	grep -q "root:" "$NM_BODY" && bad "digest $d served /etc/passwd"
done
st=$(http_status "$NM_URL/v2/../../../etc/passwd/manifests/latest")
case $st in 400|404) ok "traversal name: $st" ;; *) bad "traversal name: $st" ;; esac

# Names with bytes that are not names.
st=$(http_status "$NM_URL/v2/nix/he%00llo/manifests/latest")
nm_check_error "NUL in a name" 400 "$st" NAME_INVALID
st=$(http_status "$NM_URL/v2/nix/h%ffllo/manifests/latest")
nm_check_error "0xff in a name" 400 "$st" NAME_INVALID
for s in $(/usr/bin/python3 "$NM_WORK/hostile.py" "$PORT" raw-name); do
	case $s in
	400|404) ok "raw bytes in a name: $s" ;;
	*) bad "raw bytes in a name: $s" ;;
	esac
done

# Out of descriptors: accepting pauses instead of spinning, and resumes.
if command -v prlimit >/dev/null 2>&1; then
	soft=$(prlimit --nofile --pid "$NM_PID" -o SOFT --noheadings | tr -d ' ')
	prlimit --nofile=64: --pid "$NM_PID" || bad "prlimit failed"
	/usr/bin/python3 "$NM_WORK/hostile.py" "$PORT" many 120 >/dev/null
	grep -q "pausing accepts" "$NM_LOG" ||
	    bad "no 'pausing accepts' after running out of descriptors"
	sleep 1
	st=$(http_status "$NM_URL/v2/")
	check_eq "serving again after EMFILE" 200 "$st"
	prlimit --nofile="$soft": --pid "$NM_PID" || bad "prlimit restore failed"
fi

# Still serving, and the stalled connections are gone.
st=$(http_status "$NM_URL/v2/nix/hello/manifests/latest" -H "$ACCEPT_OCI")
check_eq "still serving" 200 "$st"
sleep 2
fds=$(ls "/proc/$NM_PID/fd" | wc -l)
awk -v n="$fds" 'BEGIN { exit !(n < 100) }' ||
    bad "the daemon still holds $fds descriptors"
nm_stop

# With the default limits, one client may hold 64 connections; the rest
# are told to come back later.
nm_start
out=$(/usr/bin/python3 "$NM_WORK/hostile.py" "$NM_PORT" per-client 70)
check_eq "70 connections from one client: 64 served, 6 refused" "64 6" "$out"
grep -q "guard 429 TOOMANYREQUESTS" "$NM_LOG" ||
    bad "no 429 TOOMANYREQUESTS in the log"
# Closed connections stop counting at once.
for i in $(seq 80); do
	curl -s -o /dev/null "$NM_URL/v2/" || bad "sequential request $i failed"
done
st=$(http_status "$NM_URL/v2/")
check_eq "80 sequential connections later" 200 "$st"
nm_stop

