# tests/e2e_tls.sh: an https upstream whose certificate (for 127.0.0.1) is
# signed by a test CA: trusted with --upstream-ca, refused without it, and
# refused when the host name does not match.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"
. "$NM_TOP/tests/upstream/lib_upstream.sh"

need curl jq

up_start tls
up_selftest
case $UP_REG_URL in
https://*) ok "registry serves TLS at $UP_REG_URL" ;;
*) fail "registry URL $UP_REG_URL is not https" ;;
esac
st=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 \
    -A "$UP_PROBE_UA" "$UP_REG_URL/v2/" 2>/dev/null) || true
check_eq "the registry's certificate is not trusted by the system" 000 "$st"

# Checks the last response is a 502 whose error names the upstream:
# check_502 WHAT STATUS
check_502()
{
	check_eq "$1: status" 502 "$2"
	_msg=$(jq -r '.errors[0].message' "$NM_BODY" 2>/dev/null) ||
	    _msg="(no error JSON: $(head -c 200 "$NM_BODY"))"
	case $_msg in
	*docker.io*|*127.0.0.1:"$UP_REG_PORT"*|*localhost:"$UP_REG_PORT"*)
		ok "$1: message names the upstream ($_msg)" ;;
	*) bad "$1: message does not name the upstream: '$_msg'" ;;
	esac
}

# With the test CA: the image comes through, bytes and digests right.
nm_start --upstream "docker.io=$UP_REG_URL" --upstream-ca "$UP_CA2"
st=$(http_status "$NM_URL/v2/library/busyimg/manifests/latest" \
    -H "$ACCEPT_DOCKER")
check_eq "with --upstream-ca: manifest status" 200 "$st"
cmp -s "$NM_BODY" "$UP_DIR/m.busy" && ok "with --upstream-ca: manifest bytes" ||
    bad "with --upstream-ca: manifest bytes differ from upstream's"
check_eq "with --upstream-ca: Content-Type" "$UP_BUSY_MT" "$(hdr Content-Type)"
for dg in "$UP_BUSY_CONFIG" "$UP_BUSY_LAYER"; do
	st=$(http_status "$NM_URL/v2/library/busyimg/blobs/$dg")
	check_eq "with --upstream-ca: blob $dg status" 200 "$st"
	check_eq "with --upstream-ca: blob $dg digest" "$dg" \
	    "$(nm_sha256 "$NM_BODY")"
done
n=$(up_reg_count GET "/v2/library/busyimg/blobs/$UP_BUSY_LAYER")
check_eq "with --upstream-ca: the registry served the layer over TLS" 1 "$n"
nm_stop

# The number of TLS handshakes the registry saw fail.
tls_errors()
{
	grep -c 'TLS handshake error' "$UP_REG_LOG" || true
}

# Without the test CA: an uncached image fails with 502, nothing fetched.
r0=$(up_reg_requests)
h0=$(tls_errors)
nm_start --upstream "docker.io=$UP_REG_URL"
st=$(http_status "$NM_URL/v2/library/busyv2/manifests/latest" \
    -H "$ACCEPT_DOCKER")
check_502 "without --upstream-ca" "$st"
st=$(http_status "$NM_URL/v2/library/busyimg/blobs/$UP_BUSY_LAYER")
check_eq "without --upstream-ca: blob status" 502 "$st"
check_eq "without --upstream-ca: no request got through" "$r0" \
    "$(up_reg_requests)"
[ "$(tls_errors)" -gt "$h0" ] &&
    ok "without --upstream-ca: nixmirror tried TLS and refused the certificate" ||
    bad "without --upstream-ca: the registry saw no failed TLS handshake"
nm_stop

# With the CA but another host name (localhost): the certificate names
# only IP 127.0.0.1, so host-name verification refuses it.
r0=$(up_reg_requests)
h0=$(tls_errors)
nm_start --upstream "docker.io=https://localhost:$UP_REG_PORT" \
    --upstream-ca "$UP_CA2"
st=$(http_status "$NM_URL/v2/library/busyv2/manifests/latest" \
    -H "$ACCEPT_DOCKER")
check_502 "host name localhost not in the certificate" "$st"
check_eq "host name mismatch: no request got through" "$r0" \
    "$(up_reg_requests)"
[ "$(tls_errors)" -gt "$h0" ] &&
    ok "host name mismatch: nixmirror tried TLS and refused the certificate" ||
    bad "host name mismatch: the registry saw no failed TLS handshake"
st=$(http_status "$NM_URL/v2/")
check_eq "/v2/ still answers" 200 "$st"
nm_stop
