# tests/e2e_hops.sh: where an upstream's redirects and token realms may
# send the mirror.  An upstream on a loopback or private address may only
# lead back to that same address; one on a public address only to public
# ones.  Anything else is refused before a connection is made (one log
# line, 502, no retry), unless the upstream's redirect_hosts names the
# host.  Two bad upstreams: A on 127.0.0.1 (the mirror's upstream) and B
# on 127.0.0.2, where A's redirects and realms point.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"
. "$NM_TOP/tests/upstream/lib_upstream.sh"

need curl jq sha256sum

up_init

# B first: A must know its address.
mkdir -p "$UP_DIR"
B_LOG=$UP_DIR/b.log
NM_LOGS="$NM_LOGS $UP_DIR/b.err $B_LOG"
"$UP_PY" "$NM_TOP/tests/upstream/bad_upstream.py" --listen 127.0.0.2:0 \
    --size 300000 --log "$B_LOG" --info "$UP_DIR/b.json" \
    --port-file "$UP_DIR/b.port" >>"$UP_DIR/b.err" 2>&1 </dev/null &
B_PID=$!
nm_track "$B_PID"
up_wait_file "$UP_DIR/b.port" "$B_PID" "upstream B"
B_URL=http://127.0.0.2:$(cat "$UP_DIR/b.port")
st=$(curl -s -o /dev/null -w '%{http_code}' "$B_URL/v2/")
check_eq "upstream B answers on 127.0.0.2" 200 "$st"

up_bad_start --size 300000 --elsewhere "$B_URL"
nm_start --upstream "docker.io=$UP_BAD_URL"

# A redirect from 127.0.0.1 to 127.0.0.2 is refused: 502, and B never
# sees a request.
layer=$(up_bad_info library/elsewhere layer)
st=$(http_status "$NM_URL/v2/library/elsewhere/manifests/latest" \
    -H "Accept: application/vnd.oci.image.manifest.v1+json")
check_eq "the manifest of the redirecting repository" 200 "$st"
: >"$B_LOG"
st=$(http_status "$NM_URL/v2/library/elsewhere/blobs/$layer")
nm_check_error "a redirect to another loopback address" 502 "$st" UNKNOWN
check_contains "the client learns why" "not allowed" "$(nm_error_message)"
check_eq "A sent one redirect (no retry)" 1 \
    "$(up_bad_count GET "/v2/library/elsewhere/blobs/$layer")"
check_eq "B got no request" 0 "$(grep -c . "$B_LOG" || true)"
check_eq "one log line says what was refused" 1 \
    "$(grep -c "refused: 127.0.0.2 is not the upstream.s own address" "$NM_LOG" || true)"
up_check_not_stored "a refused redirect" "$NM_DATA" "$layer"

# A token realm on 127.0.0.2 is refused too: 502, no token asked of B.
st=$(http_status "$NM_URL/v2/tokelse/app/manifests/latest" \
    -H "Accept: application/vnd.oci.image.manifest.v1+json")
nm_check_error "a token realm on another loopback address" 502 "$st" UNKNOWN
check_contains "the realm error says why" "not allowed" "$(nm_error_message)"
check_eq "B got no token request" 0 "$(grep -c "/token" "$B_LOG" || true)"

# A redirect back to A's own address under another name is followed.
redir=$(up_bad_info library/redir layer)
st=$(http_status "$NM_URL/v2/library/redir/manifests/latest" \
    -H "Accept: application/vnd.oci.image.manifest.v1+json")
check_eq "the manifest of library/redir" 200 "$st"
got=$(curl -s "$NM_URL/v2/library/redir/blobs/$redir" | sha256sum |
    cut -d' ' -f1)
check_eq "a redirect to localhost (A's own address) is followed" \
    "${redir#sha256:}" "$got"
nm_stop

# redirect_hosts lets the upstream send the mirror to 127.0.0.2.  (The
# config file's upstream is ghcr.io: flags win over the file, and the test
# daemon's docker.io is a closed port.)
cat >"$NM_WORK/config.json" <<EOF
{ "upstreams": { "ghcr.io": { "url": "$UP_BAD_URL",
    "redirect_hosts": ["127.0.0.*"] } } }
EOF
nm_start --config "$NM_WORK/config.json"
st=$(http_status "$NM_URL/v2/library/elsewhere/manifests/latest?ns=ghcr.io" \
    -H "Accept: application/vnd.oci.image.manifest.v1+json")
check_eq "the manifest again" 200 "$st"
got=$(curl -s "$NM_URL/v2/library/elsewhere/blobs/$layer?ns=ghcr.io" |
    sha256sum | cut -d' ' -f1)
check_eq "with redirect_hosts the redirect is followed, bytes verified" \
    "${layer#sha256:}" "$got"
check_eq "B served the blob" 1 \
    "$(grep -c "GET /cdn/$layer 200" "$B_LOG" || true)"
nm_stop

# A bad redirect_hosts entry stops the start with a message naming it.
cat >"$NM_WORK/bad.json" <<EOF
{ "upstreams": { "docker.io": { "url": "$UP_BAD_URL",
    "redirect_hosts": ["http://x/"] } } }
EOF
out=$("$NM_BIN" serve --listen 127.0.0.1:0 --data "$NM_WORK/bad-data" \
    --config "$NM_WORK/bad.json" 2>&1) && bad "a bad redirect_hosts started"
check_contains "a bad redirect_hosts is named" \
    "upstreams.docker.io.redirect_hosts[0]" "$out"
