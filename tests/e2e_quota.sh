# tests/e2e_quota.sh: the store quota.  `nixmirror gc` on a stopped daemon
# evicts least-recently-used blobs down to --max-store-bytes, keeping
# recently used and pinned images, and says what it freed; an evicted image
# is built again on the next pull; a daemon started with --max-store-bytes
# evicts by itself.  NIXMIRROR_GC_GRACE shortens the minute during which a
# used blob is safe, so the test need not wait.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"

need curl jq sha256sum
PY=/usr/bin/python3
[ -x "$PY" ] || skip "$PY not installed"

# Prints the sum of blobs.size, and checks the store's consistency on the
# way (fails the test if not).  store_bytes DIR
store_bytes()
{
	"$PY" - "$1" <<'EOF' || fail "store of $1 is inconsistent"
import os, sqlite3, sys
d = sys.argv[1]
db = sqlite3.connect("file:%s/nixmirror.db" % d, uri=True, timeout=10)
assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
assert db.execute("PRAGMA foreign_key_check").fetchall() == []
total = 0
for (dg, size) in db.execute("SELECT digest, size FROM blobs"):
    p = os.path.join(d, "blobs", "sha256", dg[7:9], dg[7:])
    assert os.path.getsize(p) == size, dg
    total += size
print(total)
EOF
}

# Whether a blob's file is in the store: has_blob DIGEST
has_blob()
{
	_h=${1#sha256:}
	[ -f "$NM_DATA/blobs/sha256/$(echo "$_h" | cut -c1-2)/$_h" ]
}

# Pulls an image whole (manifest and every blob) and prints the sum of its
# layer sizes; the manifest stays in $NM_WORK/<name>.json.  pull NAME
pull()
{
	_f=$NM_WORK/$(echo "$1" | tr / _).json
	nm_unpack "$1" latest "$NM_WORK/root.$$" >/dev/null
	rm -rf "$NM_WORK/root.$$"
	cp "$NM_WORK/unpack.manifest" "$_f"
	_cfg=$(jq -r .config.digest "$_f")
	st=$(http_status "$NM_URL/v2/$1/blobs/$_cfg")
	[ "$st" = 200 ] || fail "GET config of $1: $st"
	jq '[.layers[].size] | add' "$_f"
}

export NIXMIRROR_GC_GRACE=5
nm_start --build-timeout 120
pull nix/figlet >/dev/null
pull nix/cowsay >/dev/null
pull nix/bigdata >/dev/null
ALL=$(store_bytes "$NM_DATA")
BIGL=$(jq -r '.layers | max_by(.size) | .digest' "$NM_WORK/nix_bigdata.json")
[ "$ALL" -gt 8388608 ] && ok "four images stored: $ALL bytes" ||
    bad "store holds only $ALL bytes"

# gc refuses a data dir a daemon is serving.
rc=0
"$NM_BIN" gc --data "$NM_DATA" --max-store-bytes 1 >"$NM_WORK/gc.out" 2>&1 ||
    rc=$?
check_eq "gc while serve runs: exit status" 1 "$rc"
check_contains "gc while serve runs: message" "in use by a running" \
    "$(cat "$NM_WORK/gc.out")"

# Let everything age past the grace, then use hello; pin figlet.
sleep 6
HELLO=$(pull nix/hello)
FIGM=$(nm_manifest nix/figlet latest "$NM_WORK/fig.json")
FIG=$(jq '[.layers[].size] | add' "$NM_WORK/fig.json")
nm_stop
"$NM_BIN" pin "$FIGM" --data "$NM_DATA" >"$NM_WORK/pin.out" 2>&1 ||
    bad "pin: $(cat "$NM_WORK/pin.out")"
rc=0
"$NM_BIN" pin "sha256:$(printf '%064d' 0)" --data "$NM_DATA" \
    >/dev/null 2>&1 || rc=$?
check_eq "pin of a digest not stored: exit status" 1 "$rc"

# A quota that holds hello and figlet (and small manifests and configs).
Q=$((HELLO + FIG + 200000))
BEFORE=$(store_bytes "$NM_DATA")
"$NM_BIN" gc --data "$NM_DATA" --max-store-bytes "$Q" >"$NM_WORK/gc.out" \
    2>&1 || bad "gc failed: $(cat "$NM_WORK/gc.out")"
out=$(head -n 1 "$NM_WORK/gc.out")
echo "gc: $(cat "$NM_WORK/gc.out")"
AFTER=$(store_bytes "$NM_DATA")
case $out in
"freed "*" bytes in "*" blobs; store now $AFTER bytes")
	ok "gc says what it freed: $out" ;;
*)	bad "gc output: $out (store holds $AFTER bytes)" ;;
esac
freed=$(echo "$out" | cut -d' ' -f2)
check_eq "freed bytes add up" "$BEFORE" "$((AFTER + freed))"
[ "$AFTER" -le "$Q" ] && ok "under quota: $AFTER <= $Q" ||
    bad "over quota: $AFTER > $Q"
has_blob "$BIGL" && bad "the 8 MiB bigdata layer is still there" ||
    ok "the least recently used bigdata layer went"
for l in $(jq -r '.layers[].digest' "$NM_WORK/nix_hello.json"); do
	has_blob "$l" || bad "recently used hello layer $l evicted"
done
ok "every layer of the recently used hello kept"
for l in $(jq -r '.layers[].digest' "$NM_WORK/fig.json"); do
	has_blob "$l" || bad "pinned figlet layer $l evicted"
done
has_blob "$FIGM" && ok "pinned figlet manifest and layers kept" ||
    bad "pinned figlet manifest evicted"
"$NM_BIN" unpin "$FIGM" --data "$NM_DATA" >/dev/null 2>&1 ||
    bad "unpin failed"

# A second gc at the same quota has nothing to do.
"$NM_BIN" gc --data "$NM_DATA" --max-store-bytes "$Q" >"$NM_WORK/gc.out" 2>&1
check_eq "second gc" "freed 0 bytes in 0 blobs; store now $AFTER bytes" \
    "$(head -n 1 "$NM_WORK/gc.out")"

# The evicted image is built again and is the same.
nm_restart --build-timeout 120
b0=$(nm_builds)
pull nix/bigdata >/dev/null
check_eq "bigdata built again" 1 "$(($(nm_builds) - b0))"
check_eq "the same bigdata layer" "$BIGL" \
    "$(jq -r '.layers | max_by(.size) | .digest' "$NM_WORK/nix_bigdata.json")"
nm_stop

# The daemon keeps its own quota: a background gc every 10 s.
export NIXMIRROR_GC_GRACE=1
nm_restart --build-timeout 120 --max-store-bytes "$Q"
pull nix/cowsay >/dev/null
pull nix/figlet >/dev/null
i=0
while ! grep -q "store gc: freed" "$NM_LOG" && [ "$i" -lt 300 ]; do
	sleep 0.1
	i=$((i + 1))
done
line=$(grep "store gc: freed" "$NM_LOG" | head -n 1)
check_contains "the daemon logged its gc" "store gc: freed" "$line"
echo "daemon: $line"
sleep 0.5
NOW=$(store_bytes "$NM_DATA")
[ "$NOW" -le "$Q" ] && ok "the daemon brought the store under quota: $NOW" ||
    bad "the daemon left $NOW bytes > $Q"
pull nix/hello >/dev/null
nm_stop
store_bytes "$NM_DATA" >/dev/null && ok "consistent after the daemon's gc"
