# tests/e2e_crash.sh: kill -9 at any moment (mid-build, right after a
# build, mid-serve, mid-download from an upstream) and restart on the same
# data dir: every blob file is whole and matches its digest, DIR/tmp is
# emptied at start, SQLite passes integrity_check and foreign_key_check,
# every blob row has its file, and pulling again works and matches.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"
. "$NM_TOP/tests/upstream/lib_upstream.sh"

need curl jq sha256sum
PY=/usr/bin/python3
[ -x "$PY" ] || skip "$PY not installed"

# Checks the data dir of a stopped or running daemon: prints
# "<files> <rows>" or the first problems found.  store_check DIR
store_check()
{
	"$PY" - "$1" <<'EOF'
import hashlib, os, sqlite3, sys
d = sys.argv[1]
bad = []
files = set()
top = os.path.join(d, "blobs", "sha256")
for sub in sorted(os.listdir(top)):
    for name in sorted(os.listdir(os.path.join(top, sub))):
        p = os.path.join(top, sub, name)
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        if h.hexdigest() != name or name[:2] != sub:
            bad.append("file %s/%s hashes to %s" % (sub, name, h.hexdigest()))
        files.add("sha256:" + name)
db = sqlite3.connect("file:%s/nixmirror.db" % d, uri=True, timeout=10)
ic = db.execute("PRAGMA integrity_check").fetchall()
if ic != [("ok",)]:
    bad.append("integrity_check: %r" % ic)
fk = db.execute("PRAGMA foreign_key_check").fetchall()
if fk:
    bad.append("foreign_key_check: %r" % fk[:5])
rows = 0
for (dg, size) in db.execute("SELECT digest, size FROM blobs"):
    rows += 1
    if dg not in files:
        bad.append("row %s has no file" % dg)
    elif os.path.getsize(os.path.join(top, dg[7:9], dg[7:])) != size:
        bad.append("row %s: size %d is not the file's" % (dg, size))
for (k, dd, od) in db.execute("SELECT key, docker_digest, oci_digest FROM images"):
    for m in (dd, od):
        if m not in files:
            bad.append("image %s: manifest %s has no file" % (k, m))
print("; ".join(bad[:5]) if bad else "%d %d" % (len(files), rows))
EOF
}

# Checks a store: check_store WHAT DIR
check_store()
{
	_r=$(store_check "$2")
	case $_r in
	[0-9]*" "[0-9]*) ok "$1: store consistent ($_r files/rows)" ;;
	*) bad "$1: $_r" ;;
	esac
}

# Kills the daemon with SIGKILL and waits for it.
kill9()
{
	kill -KILL "$NM_PID" 2>/dev/null || true
	wait "$NM_PID" 2>/dev/null || true
	nm_untrack "$NM_PID"
}

# Restarts after a kill; checks DIR/tmp was emptied and the store.
restart_check()
{
	_left=$(find "$NM_DATA/tmp" -type f | wc -l)
	nm_restart "$@"
	check_eq "$WHAT: tmp empty after restart ($_left files before)" "" \
	    "$(find "$NM_DATA/tmp" -type f | head -n 3)"
	check_store "$WHAT: after restart" "$NM_DATA"
}

up_bad_start --chunk-delay 0.05 --size 4194304
nm_start --build-timeout 120 --upstream "docker.io=$UP_BAD_URL"

# A reference pull: the layers nix/hello/bigdata is made of.
nm_manifest nix/hello/bigdata latest "$NM_WORK/ref.json" >/dev/null
REF=$(jq -r '[.layers[].digest] | join(" ")' "$NM_WORK/ref.json")
BIG=$(jq -r '.layers | max_by(.size) | .digest' "$NM_WORK/ref.json")
check_store "after a clean build" "$NM_DATA"

# Kills at several moments of a build: evaluation, Nix, the layer tars
# (8 MiB incompressible), the commits.  Before each round the stopped
# store is emptied with gc (grace 0), so every layer is written again.
for delay in 0.05 0.2 0.4 0.7 1.0 1.5 2.5; do
	WHAT="kill -9 ${delay}s into a build"
	kill9
	NIXMIRROR_GC_GRACE=0 "$NM_BIN" gc --data "$NM_DATA" \
	    --max-store-bytes 1 >"$NM_WORK/gc.out" 2>&1 ||
	    bad "$WHAT: gc failed: $(cat "$NM_WORK/gc.out")"
	restart_check --build-timeout 120 --upstream "docker.io=$UP_BAD_URL"
	curl -s -o /dev/null --max-time 60 -H "$ACCEPT_DOCKER" \
	    "$NM_URL/v2/nix/hello/bigdata/manifests/latest" &
	_c=$!
	sleep "$delay"
	kill9
	wait "$_c" 2>/dev/null || true
	restart_check --build-timeout 120 --upstream "docker.io=$UP_BAD_URL"
done

# Right after a build, then mid-serve of the 8 MiB layer.
WHAT="kill -9 right after a build"
nm_manifest nix/hello/bigdata latest "$NM_WORK/m1.json" >/dev/null
kill9
restart_check --build-timeout 120 --upstream "docker.io=$UP_BAD_URL"
WHAT="kill -9 mid-serve"
nm_manifest nix/hello/bigdata latest "$NM_WORK/m2.json" >/dev/null
# A client with a small receive buffer that reads slowly, so the daemon is
# still sending when killed (loopback buffers would take 8 MiB at once).
"$PY" -c '
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
s.connect(("127.0.0.1", int(sys.argv[1])))
s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % sys.argv[2]).encode())
with open(sys.argv[3], "wb") as f:
    while True:
        b = s.recv(8192)
        if not b:
            break
        f.write(b)
        f.flush()
        time.sleep(0.01)
' "$NM_PORT" "/v2/nix/hello/bigdata/blobs/$BIG" "$NM_WORK/part" &
_c=$!
nm_track "$_c"
sleep 1
kill9
sleep 0.5
_got=$(nm_size "$NM_WORK/part")
kill "$_c" 2>/dev/null || true
wait "$_c" 2>/dev/null || true
nm_untrack "$_c"
[ "$_got" -gt 0 ] && [ "$_got" -lt 8000000 ] &&
    ok "$WHAT: the client had part of the layer ($_got bytes)" ||
    bad "$WHAT: the client had $_got bytes"
restart_check --build-timeout 120 --upstream "docker.io=$UP_BAD_URL"

# Mid-download from a slow upstream (4 MiB in 64 KiB chunks 50 ms apart).
GOOD=$(up_bad_info library/good layer)
for delay in 0.5 1.5; do
	WHAT="kill -9 ${delay}s into an upstream download"
	curl -s -o /dev/null --max-time 60 \
	    "$NM_URL/v2/library/good/blobs/$GOOD" &
	_c=$!
	sleep "$delay"
	_tmp=$(find "$NM_DATA/tmp" -type f | wc -l)
	kill9
	wait "$_c" 2>/dev/null || true
	[ "$_tmp" -gt 0 ] && ok "$WHAT: a temp file was being written" ||
	    bad "$WHAT: no temp file while downloading"
	restart_check --build-timeout 120 --upstream "docker.io=$UP_BAD_URL"
done
WHAT="upstream blob after the kills"
st=$(http_status "$NM_URL/v2/library/good/blobs/$GOOD")
check_eq "$WHAT: status" 200 "$st"
check_eq "$WHAT: digest" "$GOOD" "$(nm_sha256 "$NM_BODY")"

# Pulling again works, and the layers are the same bytes as before.
WHAT="pull after the kills"
nm_unpack nix/hello/bigdata latest "$NM_WORK/root"
check_eq "$WHAT: the same layers" "$REF" \
    "$(jq -r '[.layers[].digest] | join(" ")' "$NM_WORK/unpack.manifest")"
check_eq "$WHAT: bigdata.dat size" 8388608 \
    "$(find "$NM_WORK/root" -name bigdata.dat -exec wc -c {} \; | cut -d' ' -f1 | head -n 1)"
nm_stop
check_store "after a clean stop" "$NM_DATA"
