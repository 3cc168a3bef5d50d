# tests/e2e_metrics.sh: /metrics in the Prometheus text format.  After a
# built Nix image, a package that does not exist and an upstream image
# pulled through, promtool (Debian's prometheus) accepts the output and
# the counters say what happened: requests by route and status, builds by
# result with their durations, upstream requests and bytes, the store.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"
. "$NM_TOP/tests/upstream/lib_upstream.sh"

need curl jq promtool

up_init
# A slow upstream (1 MB in 16 chunks 0.1 s apart), so that two clients of
# one blob overlap.
up_bad_start --size 1000000 --chunk-delay 0.1
nm_start --upstream "docker.io=$UP_BAD_URL"

nm_manifest nix/hello latest "$NM_WORK/m" >/dev/null
st=$(http_status "$NM_URL/v2/nix/nope9/manifests/latest" -H "$ACCEPT_DOCKER")
check_eq "a missing package" 404 "$st"
st=$(http_status "$NM_URL/v2/library/good/manifests/latest" \
    -H "Accept: application/vnd.oci.image.manifest.v1+json")
check_eq "a pull-through manifest" 200 "$st"
layer=$(up_bad_info library/good layer)
size=$(up_bad_info library/good layer_size)
curl -s -o "$NM_WORK/b1" "$NM_URL/v2/library/good/blobs/$layer" &
p1=$!
sleep 0.3
curl -s -o "$NM_WORK/b2" "$NM_URL/v2/library/good/blobs/$layer"
wait "$p1"
check_eq "a pull-through blob, two clients" "$size $size" \
    "$(wc -c <"$NM_WORK/b1" | tr -d ' ') $(wc -c <"$NM_WORK/b2" | tr -d ' ')"
# The clients have their bytes before the commit (fsync, rename) ends:
# a hit needs the blob stored, so wait for the log to say it is.
nm_until 'grep -q "stored blob $layer" "$NM_LOG"' 300 ||
    fail "the blob was not stored in 30 s"
st=$(http_status "$NM_URL/v2/library/good/blobs/$layer")
check_eq "the blob again, from the store" 200 "$st"
st=$(http_status "$NM_URL/v2/library/good/manifests/latest" \
    -H "Accept: application/vnd.oci.image.manifest.v1+json")
check_eq "the manifest again, within the tag TTL" 200 "$st"

# A request head the guard refuses (HTTP/2.5: 505).
exec 3<>"/dev/tcp/127.0.0.1/$NM_PORT"
printf 'GET /v2/ HTTP/2.5\r\nHost: x\r\n\r\n' >&3
got=$(head -c 12 <&3)
exec 3<&-
check_eq "the guard refuses HTTP/2.5" "HTTP/1.1 505" "$got"

st=$(http_status "$NM_URL/metrics")
check_eq "/metrics" 200 "$st"
check_contains "the text format" "text/plain; version=0.0.4" \
    "$(hdr Content-Type)"
cp "$NM_BODY" "$NM_WORK/metrics"
if out=$(promtool check metrics <"$NM_WORK/metrics" 2>&1); then
	ok "promtool check metrics accepts it"
else
	bad "promtool check metrics: $out"
fi

# The value of one sample: value 'name{labels}'.
value()
{
	awk -v s="$1" 'index($0, s " ") == 1 { print $2 }' "$NM_WORK/metrics"
}
check_eq "one build succeeded" 1 "$(value 'nixmirror_builds_total{result="ok"}')"
check_eq "one build found no package" 1 \
    "$(value 'nixmirror_builds_total{result="not_found"}')"
check_eq "none in progress" 0 "$(value nixmirror_builds_in_progress)"
check_eq "both in the histogram" 2 \
    "$(value nixmirror_build_duration_seconds_count)"
check_eq "manifests answered 404" 1 \
    "$(value 'nixmirror_http_requests_total{route="manifest",status="404"}')"
check_eq "manifests answered 200" 3 \
    "$(value 'nixmirror_http_requests_total{route="manifest",status="200"}')"
check_eq "blobs answered 200" 3 \
    "$(value 'nixmirror_http_requests_total{route="blob",status="200"}')"
check_eq "the blob's bytes went out three times" "$((size * 3))" \
    "$(value 'nixmirror_http_response_bytes_total{route="blob",status="200"}')"
check_eq "one blob miss" 1 \
    "$(value 'nixmirror_cache_misses_total{type="blob",ns="docker.io"}')"
check_eq "one client joined the download" 1 \
    "$(value 'nixmirror_coalesced_waiters_total{type="blob",ns="docker.io"}')"
check_eq "one blob hit" 1 \
    "$(value 'nixmirror_cache_hits_total{type="blob",ns="docker.io"}')"
check_eq "one manifest miss" 1 \
    "$(value 'nixmirror_cache_misses_total{type="manifest",ns="docker.io"}')"
check_eq "one manifest hit" 1 \
    "$(value 'nixmirror_cache_hits_total{type="manifest",ns="docker.io"}')"
check_eq "the upstream's rate limit" 99 \
    "$(value 'nixmirror_upstream_ratelimit_remaining{upstream="docker.io"}')"
check_eq "one connection refused with 505" 1 \
    "$(value 'nixmirror_connections_refused_total{status="505"}')"
n=$(value nixmirror_connections_total)
[ "${n:-0}" -ge 9 ] && ok "connections counted ($n)" ||
    bad "connections: ${n:-none}"
n=$(value nixmirror_connections_open)
[ "${n:-0}" -ge 1 ] && ok "the scrape's connection is open ($n)" ||
    bad "open connections: ${n:-none}"
check_eq "nothing evicted without a quota" 0 \
    "$(value nixmirror_store_evicted_blobs_total)"
n=$(value 'nixmirror_upstream_requests_total{upstream="docker.io",result="ok"}')
[ "${n:-0}" -ge 2 ] && ok "upstream requests counted ($n)" ||
    bad "upstream requests: ${n:-none}"
b=$(value 'nixmirror_upstream_bytes_total{upstream="docker.io"}')
[ "${b:-0}" -ge "$size" ] && ok "upstream bytes counted ($b)" ||
    bad "upstream bytes ${b:-none} < $size"
blobs=$(find "$NM_DATA/blobs" -type f | wc -l)
check_eq "the store's blobs" "$blobs" "$(value nixmirror_store_blobs)"
bytes=$(find "$NM_DATA/blobs" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
check_eq "the store's bytes" "$bytes" "$(value nixmirror_store_bytes)"
st=$(curl -s -o /dev/null -w '%{http_code}' -I "$NM_URL/metrics")
check_eq "HEAD /metrics" 200 "$st"
nm_stop

# Who may read /metrics is the policy's status.allow (loopback without it).
echo '{"status": {"allow": ["10.0.0.0/8"]}}' >"$NM_WORK/policy.json"
nm_restart --upstream "docker.io=$UP_BAD_URL" --policy "$NM_WORK/policy.json"
st=$(http_status "$NM_URL/metrics")
nm_check_error "a loopback client not in status.allow" 403 "$st" DENIED
check_contains "the error names the rule" "not in status.allow" \
    "$(nm_error_message)"
st=$(http_status "$NM_URL/v2/")
check_eq "the registry still answers it" 200 "$st"
echo '{"status": {"allow": ["127.0.0.1/32"]}}' >"$NM_WORK/policy.json"
kill -HUP "$NM_PID"
i=0
while [ "$(http_status "$NM_URL/metrics")" != 200 ] && [ $i -lt 50 ]; do
	sleep 0.1
	i=$((i + 1))
done
check_eq "after SIGHUP status.allow lets it in" 200 "$(http_status "$NM_URL/metrics")"
nm_stop
