# tests/e2e_metrics.sh: /metrics in the Prometheus text format.  After a
# built Nix image, a package that does not exist and an upstream image
# pulled through, promtool (Debian's prometheus) accepts the output and
# the counters say what happened: requests by route and status, builds by
# result with their durations, upstream requests and bytes, the store.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"
. "$NM_TOP/tests/upstream/lib_upstream.sh"

need curl jq promtool

up_init
up_bad_start --size 300000
nm_start --upstream "docker.io=$UP_BAD_URL"

nm_manifest nix/hello latest "$NM_WORK/m" >/dev/null
st=$(http_status "$NM_URL/v2/nix/nope9/manifests/latest" -H "$ACCEPT_DOCKER")
check_eq "a missing package" 404 "$st"
st=$(http_status "$NM_URL/v2/library/good/manifests/latest" \
    -H "Accept: application/vnd.oci.image.manifest.v1+json")
check_eq "a pull-through manifest" 200 "$st"
layer=$(up_bad_info library/good layer)
size=$(up_bad_info library/good layer_size)
st=$(http_status "$NM_URL/v2/library/good/blobs/$layer")
check_eq "a pull-through blob" 200 "$st"

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
check_eq "manifests answered 200" 2 \
    "$(value 'nixmirror_http_requests_total{route="manifest",status="200"}')"
check_eq "manifests answered 404" 1 \
    "$(value 'nixmirror_http_requests_total{route="manifest",status="404"}')"
check_eq "blobs answered 200" 1 \
    "$(value 'nixmirror_http_requests_total{route="blob",status="200"}')"
check_eq "the blob's bytes went out" "$size" \
    "$(value 'nixmirror_http_response_bytes_total{route="blob",status="200"}')"
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
