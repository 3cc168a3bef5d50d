# tests/e2e_links.sh: repository links against a real upstream
# (docker-registry with token auth, tests/upstream/).  Content stored for
# one repository is served under another only when that repository's
# upstream confirms it holds the digest (a HEAD, never a second download);
# a private repository's layers do not leak through a public name; Nix
# content and pull-through content never cross; a policy deny holds for
# digests; a HEAD of an uncached blob downloads nothing; offline, an
# unlinked digest is 404.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"
. "$NM_TOP/tests/upstream/lib_upstream.sh"

need curl jq cmp

up_start
POL=$NM_WORK/policy.json
cat >"$POL" <<EOF
{ "upstreams": { "docker.io": { "deny": ["library/busyv2"] } },
  "nix": { "deny": ["secretpkg"] } }
EOF
nm_start --upstream "docker.io=$UP_REG_URL" --policy "$POL"
DATA=$NM_DATA

# Checks that a blob is not among the registry's GETs: no_get WHAT PATH.
no_get()
{
	check_eq "$1: no upstream GET of $2" 0 "$(up_reg_count GET "$2")"
}

# busyimg is pulled through the mirror: manifest, config and layer.
dg=$(nm_manifest library/busyimg latest "$NM_WORK/m.busy")
check_eq "busyimg digest" "$UP_BUSY_DG" "$dg"
for b in "$UP_BUSY_CONFIG" "$UP_BUSY_LAYER"; do
	st=$(http_status "$NM_URL/v2/library/busyimg/blobs/$b")
	check_eq "busyimg blob $b" 200 "$st"
	check_eq "busyimg blob $b bytes" "$b" "$(nm_sha256 "$NM_BODY")"
done
cp "$NM_BODY" "$NM_WORK/busy.layer"

# bigimg's repository on the upstream does not hold busyimg's layer: 404,
# from a HEAD under bigimg's scope, not from the stored bytes.
st=$(http_status "$NM_URL/v2/library/bigimg/blobs/$UP_BUSY_LAYER")
nm_check_error "busyimg's layer under library/bigimg" 404 "$st" BLOB_UNKNOWN
check_ne "the upstream was asked with a HEAD under bigimg" 0 \
    "$(up_reg_access | grep -F "\"HEAD /v2/library/bigimg/blobs/$UP_BUSY_LAYER" |
    grep -c '" 404 ' || true)"
no_get "busyimg's layer under library/bigimg" \
    "/v2/library/bigimg/blobs/$UP_BUSY_LAYER"
st=$(http_status "$NM_URL/v2/library/bigimg/blobs/$UP_BUSY_LAYER" -I)
check_eq "HEAD of busyimg's layer under library/bigimg" 404 "$st"
st=$(http_status "$NM_URL/v2/library/bigimg/manifests/$UP_BUSY_DG" \
    -H "$ACCEPT_DOCKER")
nm_check_error "busyimg's manifest under library/bigimg" 404 "$st" \
    MANIFEST_UNKNOWN
st=$(http_status "$NM_URL/v2/library/nosuchrepo/blobs/$UP_BUSY_LAYER")
nm_check_error "busyimg's layer under a repository the upstream lacks" \
    404 "$st" BLOB_UNKNOWN

# private/secret holds the same layer, but anonymous pulls of it are
# denied upstream: the stored copy does not answer for it.
st=$(http_status "$NM_URL/v2/private/secret/blobs/$UP_BUSY_LAYER")
nm_check_error "busyimg's layer under private/secret" 403 "$st" DENIED
st=$(http_status "$NM_URL/v2/private/secret/manifests/$UP_BUSY_DG" \
    -H "$ACCEPT_DOCKER")
nm_check_error "busyimg's manifest under private/secret" 403 "$st" DENIED

# library/multi does hold the layer (its amd64 child is busy's image): the
# upstream confirms with a HEAD, and the stored bytes are served with no
# second download.
st=$(http_status "$NM_URL/v2/library/multi/blobs/$UP_BUSY_LAYER")
check_eq "busyimg's layer under library/multi (confirmed)" 200 "$st"
cmp -s "$NM_BODY" "$NM_WORK/busy.layer" &&
    ok "library/multi gets the stored bytes" ||
    bad "library/multi got other bytes"
no_get "the confirmed layer" "/v2/library/multi/blobs/$UP_BUSY_LAYER"
r0=$(up_reg_requests)
st=$(http_status "$NM_URL/v2/library/multi/blobs/$UP_BUSY_LAYER")
check_eq "library/multi's layer again" 200 "$st"
check_eq "a confirmed link needs no second HEAD" "$r0" "$(up_reg_requests)"

# The policy denies busyv2: its name gets 403 for anything, stored digests
# included; its digests under other names are not busyv2's to give.
st=$(http_status "$NM_URL/v2/library/busyv2/blobs/$UP_BUSY_LAYER")
nm_check_error "denied busyv2, a stored digest" 403 "$st" DENIED
st=$(http_status "$NM_URL/v2/library/busyv2/manifests/$UP_BUSY_DG" \
    -H "$ACCEPT_DOCKER")
nm_check_error "denied busyv2, a stored manifest" 403 "$st" DENIED
check_eq "the denied name reached no upstream" 0 \
    "$(up_reg_mentions /v2/library/busyv2/)"

# HEAD of a blob not stored: answered from the upstream's HEAD; nothing
# is downloaded or stored.
st=$(http_status "$NM_URL/v2/library/bigimg/blobs/$UP_BIG_LAYER" -I)
check_eq "HEAD of the uncached big layer" 200 "$st"
check_eq "HEAD of the uncached big layer: Content-Length" \
    "$(jq -r '.layers[0].size' "$UP_DIR/m.big")" \
    "$(hdr Content-Length)"
check_eq "HEAD of the uncached big layer: Docker-Content-Digest" \
    "$UP_BIG_LAYER" "$(hdr Docker-Content-Digest)"
no_get "HEAD of the uncached big layer" \
    "/v2/library/bigimg/blobs/$UP_BIG_LAYER"
up_check_not_stored "HEAD of the uncached big layer" "$DATA" "$UP_BIG_LAYER"
zero=sha256:$(printf '%064d' 0)
st=$(http_status "$NM_URL/v2/library/bigimg/blobs/$zero" -I)
check_eq "HEAD of a blob the upstream lacks" 404 "$st"
# Then a GET downloads it once.
st=$(http_status "$NM_URL/v2/library/bigimg/blobs/$UP_BIG_LAYER")
check_eq "GET of the big layer after the HEAD" 200 "$st"
check_eq "GET of the big layer: bytes" "$UP_BIG_LAYER" \
    "$(nm_sha256 "$NM_BODY")"
check_eq "one upstream GET of the big layer" 1 \
    "$(up_reg_count GET "/v2/library/bigimg/blobs/$UP_BIG_LAYER")"

# Nix content and pull-through content never cross.
ndg=$(nm_manifest nix/hello latest "$NM_WORK/m.hello")
nlayer=$(jq -r '.layers[0].digest' "$NM_WORK/m.hello")
st=$(http_status "$NM_URL/v2/nix/hello/blobs/$nlayer")
check_eq "nix/hello's layer under its name" 200 "$st"
st=$(http_status "$NM_URL/v2/nix/hello/manifests/$ndg" -H "$ACCEPT_DOCKER")
check_eq "nix/hello's manifest by digest under its name" 200 "$st"
st=$(http_status "$NM_URL/v2/nix/hello/blobs/$UP_BUSY_LAYER")
nm_check_error "busyimg's layer under nix/hello" 404 "$st" BLOB_UNKNOWN
st=$(http_status "$NM_URL/v2/nix/hello/manifests/$UP_BUSY_DG" \
    -H "$ACCEPT_DOCKER")
nm_check_error "busyimg's manifest under nix/hello" 404 "$st" \
    MANIFEST_UNKNOWN
st=$(http_status "$NM_URL/v2/nix/shell/blobs/$nlayer")
nm_check_error "nix/hello's layer under nix/shell, never pulled" 404 "$st" \
    BLOB_UNKNOWN
st=$(http_status "$NM_URL/v2/nix/hello/secretpkg/blobs/$nlayer")
nm_check_error "a denied package, by digest" 403 "$st" DENIED
st=$(http_status "$NM_URL/v2/nix/hello/secretpkg/manifests/$ndg" \
    -H "$ACCEPT_DOCKER")
nm_check_error "a denied package, manifest by digest" 403 "$st" DENIED
st=$(http_status "$NM_URL/v2/library/busyimg/blobs/$nlayer")
nm_check_error "nix/hello's layer under library/busyimg" 404 "$st" \
    BLOB_UNKNOWN
st=$(http_status "$NM_URL/v2/library/busyimg/manifests/$ndg" \
    -H "$ACCEPT_DOCKER")
nm_check_error "nix/hello's manifest under library/busyimg" 404 "$st" \
    MANIFEST_UNKNOWN

# Offline, on the same store: what was linked is served, the rest is 404
# and the upstream hears nothing.
nm_stop
r0=$(up_reg_requests)
nm_restart --upstream "docker.io=$UP_REG_URL" --offline
st=$(http_status "$NM_URL/v2/library/busyimg/blobs/$UP_BUSY_LAYER")
check_eq "offline: busyimg's layer" 200 "$st"
st=$(http_status "$NM_URL/v2/library/multi/blobs/$UP_BUSY_LAYER")
check_eq "offline: the confirmed layer under library/multi" 200 "$st"
st=$(http_status "$NM_URL/v2/library/bigimg/blobs/$UP_BUSY_LAYER")
nm_check_error "offline: busyimg's layer under library/bigimg" 404 "$st" \
    BLOB_UNKNOWN
st=$(http_status "$NM_URL/v2/library/bigimg/manifests/$UP_BUSY_DG" \
    -H "$ACCEPT_DOCKER")
nm_check_error "offline: busyimg's manifest under library/bigimg" 404 \
    "$st" MANIFEST_UNKNOWN
check_eq "offline: no request reached the registry" "$r0" \
    "$(up_reg_requests)"
nm_stop
