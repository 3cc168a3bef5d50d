# tests/e2e_credentials.sh: an upstream whose token realm refuses anonymous
# pulls.  Without credentials the mirror answers 403 DENIED; with the
# credentials of its --config file it gets a token with HTTP Basic on the
# realm request, and the password never reaches its log.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"
. "$NM_TOP/tests/upstream/lib_upstream.sh"

need curl jq base64

up_start
up_selftest
# From now on the realm wants Basic credentials even for pulls.
up_token_stop
up_token_start --require-auth
st=$(curl -s -o /dev/null -w '%{http_code}' -A "$UP_PROBE_UA" \
    "$UP_TOK_URL?service=test-registry&scope=repository:library/busyimg:pull")
check_eq "the realm refuses anonymous pulls" 401 "$st"

ACCEPT="Accept: application/vnd.oci.image.manifest.v1+json"

# No credentials: the token dance fails, the client gets 403 DENIED.
nm_start --upstream "ghcr.io=$UP_REG_URL"
st=$(http_status "$NM_URL/v2/library/busyimg/manifests/latest?ns=ghcr.io" \
    -H "$ACCEPT")
nm_check_error "no credentials" 403 "$st" DENIED
nm_stop

# Credentials in the config file (never on the command line).
cat >"$NM_WORK/config.json" <<EOF
{ "upstreams": { "ghcr.io": { "url": "$UP_REG_URL",
    "username": "$UP_USER", "password": "$UP_PASS" } } }
EOF
before=$(up_tok_count "user=$UP_USER")
nm_start --config "$NM_WORK/config.json"
st=$(http_status "$NM_URL/v2/library/busyimg/manifests/latest?ns=ghcr.io" \
    -H "$ACCEPT")
check_eq "with credentials" 200 "$st"
check_eq "the manifest is upstream's" "$UP_BUSY_DG" "$(hdr Docker-Content-Digest)"
after=$(up_tok_count "user=$UP_USER")
[ "$after" -gt "$before" ] || bad "the token issuer saw no request as $UP_USER"
ok "the token was asked for as $UP_USER"
cfg=$(jq -r '.config.digest' "$NM_BODY")
got=$(curl -s "$NM_URL/v2/library/busyimg/blobs/$cfg?ns=ghcr.io" |
    sha256sum | cut -d' ' -f1)
check_eq "a blob through the authenticated upstream" "${cfg#sha256:}" "$got"

# The client's own Authorization is not what went upstream, and the
# password is nowhere in the log, plain or in Basic form.
st=$(http_status "$NM_URL/v2/library/busyv2/manifests/latest?ns=ghcr.io" \
    -H "$ACCEPT" -H "Authorization: Basic $(printf 'eve:evil' | base64)")
check_eq "a client's Authorization is ignored" 200 "$st"
grep -q "user=eve" "$UP_TOK_LOG" && bad "the client's credentials went upstream"
b64=$(printf '%s:%s' "$UP_USER" "$UP_PASS" | base64)
if grep -qF -e "$UP_PASS" -e "$b64" "$NM_LOG"; then
	bad "the password is in the daemon's log"
else
	ok "the password is not in the daemon's log"
fi
nm_stop
