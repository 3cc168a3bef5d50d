# tests/e2e_redirect.sh: blob redirects, as Docker Hub sends them to its
# CDN.  The mirror follows a 307 to another host without the upstream's
# Authorization, verifies the bytes, and refuses redirect loops and
# non-http schemes.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"
. "$NM_TOP/tests/upstream/lib_upstream.sh"

need curl jq sha256sum

up_init
up_bad_start --size 300000
nm_start --upstream "docker.io=$UP_BAD_URL"

# The redirecting repository wants a token; the CDN must get none.
layer=$(up_bad_info library/redir layer)
st=$(http_status "$NM_URL/v2/library/redir/manifests/latest" \
    -H "Accept: application/vnd.oci.image.manifest.v1+json")
check_eq "manifest behind a token" 200 "$st"
got=$(curl -s "$NM_URL/v2/library/redir/blobs/$layer" | sha256sum |
    cut -d' ' -f1)
check_eq "a redirected blob has the right bytes" "${layer#sha256:}" "$got"
check_eq "the blob request carried the token" 1 \
    "$(grep -c "GET /v2/library/redir/blobs/$layer 307 auth=yes" "$UP_BAD_LOG")"
check_eq "the CDN got the request without Authorization" 1 \
    "$(grep -c "GET /cdn/$layer 200 auth=no" "$UP_BAD_LOG")"
check_eq "no Authorization ever reached the CDN" 0 \
    "$(grep -c "/cdn/.* auth=yes" "$UP_BAD_LOG")"

# A redirect loop ends after 5 hops; a non-http scheme is not followed.
loop=$(up_bad_info library/loop layer)
st=$(http_status "$NM_URL/v2/library/loop/blobs/$loop")
nm_check_error "redirect loop" 502 "$st" UNKNOWN
check_contains "loop message" "too many redirects" "$(nm_error_message)"
hops=$(grep -c "GET /v2/library/loop/blobs/" "$UP_BAD_LOG")
check_eq "the loop was followed 5 times after the first" 6 "$hops"
ftp=$(up_bad_info library/ftp layer)
st=$(http_status "$NM_URL/v2/library/ftp/blobs/$ftp")
nm_check_error "redirect to ftp" 502 "$st" UNKNOWN
check_contains "ftp message" "not http or https" "$(nm_error_message)"
up_check_not_stored "redirect loop" "$NM_DATA" "$loop"
up_check_not_stored "redirect to ftp" "$NM_DATA" "$ftp"
nm_stop
