# tests/e2e_stall.sh: upstream transfers that stop making progress are cut
# (issue 8), with a client waiting or without one, and downloads in flight
# cannot fill the disk: tests/upstream/bad_upstream.py trickles a layer a
# byte at a time, trickles response headers, and sends a body that never
# ends.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"
. "$NM_TOP/tests/upstream/lib_upstream.sh"

need curl jq

up_bad_start --size 1048576 --trickle-delay 0.5
cat >"$NM_WORK/policy.json" <<EOF
{"limits": {"max_tmp_bytes": 6291456}}
EOF
# A window of 2 seconds: under 2 KiB in one is a stall.
nm_start --upstream "docker.io=$UP_BAD_URL" --upstream-timeout 2 \
    --policy "$NM_WORK/policy.json"

# The files of downloads in flight.
tmp_files()
{
	[ -d "$NM_DATA/tmp" ] || fail "no $NM_DATA/tmp"
	find "$NM_DATA/tmp" -type f | wc -l
}

# Waits up to 20 s for a line matching a fixed string in a file:
# wait_line FILE STRING COUNT.
wait_line()
{
	_n=0
	while [ "$(grep -cF -- "$2" "$1" || true)" -lt "$3" ]; do
		_n=$((_n + 1))
		[ "$_n" -lt 200 ] || return 1
		sleep 0.1
	done
}

# The control: a healthy 1 MiB layer comes through whole.
d=$(nm_manifest library/good latest "$NM_WORK/m")
good=$(up_bad_info library/good layer)
st=$(http_status "$NM_URL/v2/library/good/blobs/$good")
check_eq "a healthy layer" 200 "$st"
check_eq "the healthy layer's bytes" "$good" "$(nm_sha256 "$NM_BODY")"

# A layer that trickles after 64 KiB, with a client waiting: the client's
# transfer is cut within a few windows, not after hours.
d=$(nm_manifest library/trickle latest "$NM_WORK/m")
lay=$(up_bad_info library/trickle layer)
t0=$(date +%s)
: >"$NM_WORK/trickle"
rc=0
curl -s -o "$NM_WORK/trickle" --max-time 60 \
    "$NM_URL/v2/library/trickle/blobs/$lay" || rc=$?
t1=$(date +%s)
check_ne "the trickled transfer did not complete" 0 "$rc"
[ "$(nm_size "$NM_WORK/trickle")" -lt 1048576 ] &&
    ok "the client did not get a whole trickled layer" ||
    bad "the client got the whole trickled layer"
[ $((t1 - t0)) -lt 30 ] && ok "cut after $((t1 - t0)) s" ||
    bad "the trickle ran $((t1 - t0)) s"
check_contains "the log says why" "stalled:" "$(cat "$NM_LOG")"
wait_line "$UP_BAD_LOG" "TRICKLE-END $lay" 1 &&
    ok "the upstream connection was closed" ||
    bad "the upstream still trickles to the mirror"
check_eq "no temp file left after the cut" 0 "$(tmp_files)"

# The same with no client: it leaves after one second, the download goes
# on for the cache, and is cut all the same.
curl -s -o /dev/null --max-time 1 "$NM_URL/v2/library/trickle/blobs/$lay" ||
    true
wait_line "$UP_BAD_LOG" "TRICKLE-END $lay" 2 &&
    ok "with no client left, the trickle was cut" ||
    bad "with no client left, the trickle goes on"
wait_line "$NM_LOG" "stalled:" 2 || bad "the second cut was not logged"
check_eq "no temp file left after the second cut" 0 "$(tmp_files)"
check_eq "the trickled layer is not stored" 0 \
    "$(find "$NM_DATA" -name "${lay#sha256:}*" | wc -l)"

# Headers that trickle: 502 with the reason, and the connection closed.
t0=$(date +%s)
st=$(http_status "$NM_URL/v2/library/slowhead/manifests/latest" \
    -H "$ACCEPT_DOCKER")
t1=$(date +%s)
nm_check_error "trickled headers" 502 "$st" UNKNOWN
check_contains "the error says no headers came" "no response headers" \
    "$(nm_error_message)"
[ $((t1 - t0)) -lt 30 ] && ok "trickled headers cut after $((t1 - t0)) s" ||
    bad "trickled headers ran $((t1 - t0)) s"
wait_line "$UP_BAD_LOG" "SLOWHEAD-END" 1 &&
    ok "the slow-header connection was closed" ||
    bad "the upstream still sends headers to the mirror"

# A body with no Content-Length that never ends: cut at the policy's
# limits.max_tmp_bytes (6 MiB), with 503 and Retry-After, nothing kept.
d=$(nm_manifest library/endless latest "$NM_WORK/m")
lay=$(up_bad_info library/endless layer)
st=$(http_status "$NM_URL/v2/library/endless/blobs/$lay")
nm_check_error "an endless body" 503 "$st" UNAVAILABLE
check_contains "the error names the limit" "limits.max_tmp_bytes" \
    "$(nm_error_message)"
check_eq "with Retry-After" 30 "$(hdr Retry-After)"
wait_line "$UP_BAD_LOG" "ENDLESS-END" 1 &&
    ok "the endless body's connection was closed" ||
    bad "the endless body still flows"
sent=$(grep -F "ENDLESS-END" "$UP_BAD_LOG" | head -1 | sed 's/.*sent=//')
echo "# the endless upstream sent $sent bytes"
check_eq "no temp file left after the endless body" 0 "$(tmp_files)"

# What the limit leaves room for still comes through.
st=$(http_status "$NM_URL/v2/library/good/blobs/$good")
check_eq "a healthy layer after the cuts" 200 "$st"
check_eq "its bytes" "$good" "$(nm_sha256 "$NM_BODY")"
nm_stop
