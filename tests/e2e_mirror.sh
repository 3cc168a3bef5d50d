# tests/e2e_mirror.sh: the pull-through cache against a real upstream
# (docker-registry with token auth, tests/upstream/): Docker-style pulls,
# ns routing, index children on demand, coalescing of a large blob,
# stale-if-error, errors, no credential forwarding, --offline.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"
. "$NM_TOP/tests/upstream/lib_upstream.sh"

need curl jq shuf cmp

up_start
up_selftest
# ghcr.io is served by the same test registry, to check ns routing.
nm_start --upstream "docker.io=$UP_REG_URL" --upstream "ghcr.io=$UP_REG_URL"
DATA=$NM_DATA

# Checks no header of the last response is set: no_hdr WHAT HEADER.
no_hdr()
{
	check_eq "$1" "" "$(hdr "$2")"
}

# Prints curl args with the four Accept headers Docker sends, as separate
# headers in random order, one per line (for `set --`).
accept_args()
{
	printf '%s\n' "$MT_DOCKER" "$MT_DLIST" "$MT_OCI" "$MT_OINDEX" | shuf |
	    while read -r _a; do
		printf '%s\n' -H "Accept: $_a"
	done
}

# A HEAD then GET of a manifest the way Docker's daemon does it (no ns,
# Accept headers in random order), checked against upstream's bytes, digest
# and media type: docker_manifest NAME REF UPFILE UPDIGEST UPTYPE.
docker_manifest()
{
	_n=$1 _r=$2 _uf=$3 _ud=$4 _ut=$5
	_old_ifs=$IFS
	IFS='
'
	# shellcheck disable=SC2046
	set -- $(accept_args)
	IFS=$_old_ifs
	st=$(http_status "$NM_URL/v2/$_n/manifests/$_r" -I "$@")
	check_eq "HEAD $_n:$_r status" 200 "$st"
	check_eq "HEAD $_n:$_r Docker-Content-Digest" "$_ud" \
	    "$(hdr Docker-Content-Digest)"
	check_eq "HEAD $_n:$_r Content-Length" "$(nm_size "$_uf")" \
	    "$(hdr Content-Length)"
	check_eq "HEAD $_n:$_r Content-Type" "$_ut" "$(hdr Content-Type)"
	for _ref in "$_r" "$_ud"; do
		st=$(http_status "$NM_URL/v2/$_n/manifests/$_ref" "$@")
		check_eq "GET $_n manifest $_ref status" 200 "$st"
		if cmp -s "$NM_BODY" "$_uf"; then
			ok "GET $_n manifest $_ref: bytes are upstream's"
		else
			bad "GET $_n manifest $_ref: bytes differ from upstream's"
		fi
		check_eq "GET $_n manifest $_ref Docker-Content-Digest" "$_ud" \
		    "$(hdr Docker-Content-Digest)"
		check_eq "GET $_n manifest $_ref Content-Type" "$_ut" \
		    "$(hdr Content-Type)"
	done
}

# GETs every blob of an image manifest (config and layers) and checks
# digest and size: docker_blobs NAME MANIFEST-FILE.
docker_blobs()
{
	jq -r '.config | "\(.digest) \(.size)"' "$2" >"$NM_WORK/blobs"
	jq -r '.layers[] | "\(.digest) \(.size)"' "$2" >>"$NM_WORK/blobs"
	while read -r _dg _sz; do
		st=$(http_status "$NM_URL/v2/$1/blobs/$_dg")
		check_eq "GET $1 blob $_dg status" 200 "$st"
		check_eq "GET $1 blob $_dg digest of the bytes" "$_dg" \
		    "$(nm_sha256 "$NM_BODY")"
		check_eq "GET $1 blob $_dg size" "$_sz" "$(nm_size "$NM_BODY")"
		check_eq "GET $1 blob $_dg Docker-Content-Digest" "$_dg" \
		    "$(hdr Docker-Content-Digest)"
	done <"$NM_WORK/blobs"
}

# /v2/ answers 200 without a challenge.  This matters for Docker's
# daemon.json {"registry-mirrors": ["http://mirror.example:5000"]} as the
# README shows it: no Docker engine can run here, so the Docker-style
# request sequence below (GET /v2/, HEAD by tag with separate Accept
# headers in random order, GET by digest, then the blobs; full names with
# library/, no ns parameter) is what exercises that snippet.  A challenge
# would make dockerd hand the user's Hub credentials to the mirror.
st=$(http_status "$NM_URL/v2/")
check_eq "/v2/ status" 200 "$st"
no_hdr "/v2/ has no WWW-Authenticate" WWW-Authenticate
tr -d ' \t\n' <"$NM_TOP/README.md" |
    grep -qF '"registry-mirrors":["http://mirror.example:5000"]' &&
    ok "README shows the daemon.json registry-mirrors snippet" ||
    bad "README lacks {\"registry-mirrors\": [\"http://mirror.example:5000\"]}"

# An OCI image, a Docker schema2 image and an OCI index, all as upstream
# has them (never converted).
docker_manifest library/busyimg latest "$UP_DIR/m.busy" "$UP_BUSY_DG" \
    "$UP_BUSY_MT"
docker_blobs library/busyimg "$UP_DIR/m.busy"
docker_manifest library/busyv2 latest "$UP_DIR/m.busyv2" "$UP_BUSYV2_DG" \
    "$UP_BUSYV2_MT"
docker_blobs library/busyv2 "$UP_DIR/m.busyv2"
check_eq "the token issuer handed nixmirror a token for busyimg" 1 \
    "$([ "$(up_tok_count "scope=repository:library/busyimg:pull")" -ge 1 ] &&
    echo 1 || echo 0)"
grep -E '^[0-9]+ GET .*scope=repository:library/busyimg:pull ' \
    "$UP_TOK_LOG" | grep -vF "ua=$UP_PROBE_UA" | grep -vF "ua=skopeo/" |
    grep -q "status=200 granted=repository:library/busyimg:pull " &&
    ok "nixmirror's token request was anonymous and granted pull" ||
    bad "nixmirror's token request was anonymous and granted pull"

# Range on a stored blob: 206 with the right bytes.
http_status "$NM_URL/v2/library/busyimg/blobs/$UP_BUSY_LAYER" >/dev/null
cp "$NM_BODY" "$NM_WORK/busy.layer"
lsize=$(nm_size "$NM_WORK/busy.layer")
st=$(http_status "$NM_URL/v2/library/busyimg/blobs/$UP_BUSY_LAYER" \
    -H "Range: bytes=100-199")
check_eq "Range 100-199 status" 206 "$st"
check_eq "Range 100-199 Content-Range" "bytes 100-199/$lsize" \
    "$(hdr Content-Range)"
tail -c +101 "$NM_WORK/busy.layer" | head -c 100 >"$NM_WORK/want.range"
cmp -s "$NM_BODY" "$NM_WORK/want.range" && ok "Range 100-199 bytes" ||
    bad "Range 100-199 bytes differ"
st=$(http_status "$NM_URL/v2/library/busyimg/blobs/$UP_BUSY_LAYER" \
    -H "Range: bytes=1000-")
check_eq "Range 1000- status" 206 "$st"
check_eq "Range 1000- length" $((lsize - 1000)) "$(nm_size "$NM_BODY")"

# containerd's ns parameter: the same content, and OCI-Namespace echoes it.
st=$(http_status "$NM_URL/v2/library/busyimg/manifests/latest?ns=docker.io" \
    -H "$ACCEPT_DOCKER")
check_eq "GET ?ns=docker.io status" 200 "$st"
check_eq "GET ?ns=docker.io OCI-Namespace" docker.io "$(hdr OCI-Namespace)"
check_eq "GET ?ns=docker.io digest" "$UP_BUSY_DG" "$(nm_sha256 "$NM_BODY")"
st=$(http_status "$NM_URL/v2/library/busyimg/blobs/$UP_BUSY_CONFIG?ns=docker.io")
check_eq "GET blob ?ns=docker.io status" 200 "$st"
check_eq "GET blob ?ns=docker.io OCI-Namespace" docker.io \
    "$(hdr OCI-Namespace)"

# A second configured namespace.
st=$(http_status "$NM_URL/v2/library/busyv2/manifests/latest?ns=ghcr.io" \
    -H "$ACCEPT_DOCKER")
check_eq "GET ?ns=ghcr.io status" 200 "$st"
check_eq "GET ?ns=ghcr.io OCI-Namespace" ghcr.io "$(hdr OCI-Namespace)"
check_eq "GET ?ns=ghcr.io digest" "$UP_BUSYV2_DG" "$(nm_sha256 "$NM_BODY")"

# A multi-arch index: only the child a client asks for is fetched.
docker_manifest library/multi latest "$UP_DIR/m.multi" "$UP_MULTI_DG" \
    "$UP_MULTI_MT"
up_get_manifest library/multi "$UP_MULTI_AMD64" "$UP_DIR/m.amd64"
up_get_manifest library/multi "$UP_MULTI_ARM64" "$UP_DIR/m.arm64"
arm64_config=$(jq -r .config.digest "$UP_DIR/m.arm64")
st=$(http_status "$NM_URL/v2/library/multi/manifests/$UP_MULTI_AMD64" \
    -H "$ACCEPT_DOCKER")
check_eq "GET amd64 child status" 200 "$st"
cmp -s "$NM_BODY" "$UP_DIR/m.amd64" && ok "amd64 child bytes are upstream's" ||
    bad "amd64 child bytes differ from upstream's"
check_eq "amd64 child Content-Type" "$MT_OCI" "$(hdr Content-Type)"
# An uncached blob streamed to a client that sends "Connection: close":
# the end of the response frees the connection at once (this once crashed
# the daemon with a double free).
amd64_config=$(jq -r .config.digest "$UP_DIR/m.amd64")
st=$(http_status "$NM_URL/v2/library/multi/blobs/$amd64_config" \
    -H 'Connection: close')
check_eq "uncached blob with Connection: close: status" 200 "$st"
check_eq "uncached blob with Connection: close: digest of the bytes" \
    "$amd64_config" "$(nm_sha256 "$NM_BODY")"
check_eq "the daemon still answers after it" 200 \
    "$(http_status "$NM_URL/v2/")"
docker_blobs library/multi "$UP_DIR/m.amd64"
check_eq "arm64 child manifest never fetched upstream" 0 \
    "$(up_reg_mentions "$UP_MULTI_ARM64")"
check_eq "arm64 child config never fetched upstream" 0 \
    "$(up_reg_mentions "$arm64_config")"

# A client's Authorization header goes nowhere.
st=$(http_status "$NM_URL/v2/library/bigimg/manifests/latest" \
    -H "$ACCEPT_DOCKER" -H "Authorization: Basic Zm9vOmJhcg==")
check_eq "GET with a client Authorization status" 200 "$st"
check_eq "GET with a client Authorization digest" "$UP_BIG_DG" \
    "$(nm_sha256 "$NM_BODY")"
check_eq "token issuer never saw the client's user" 0 \
    "$(grep -c 'user=foo\|Zm9vOmJhcg' "$UP_TOK_LOG" || true)"
check_eq "registry never saw the client's credentials" 0 \
    "$(grep -c 'Zm9vOmJhcg\|user.name=foo' "$UP_REG_LOG" || true)"
check_eq "nixmirror got a token for bigimg" 1 \
    "$([ "$(up_tok_count "scope=repository:library/bigimg:pull")" -ge 1 ] &&
    echo 1 || echo 0)"

# Coalescing: 12 concurrent clients on the uncached 24 MiB layer make one
# upstream download, and all get the right bytes.
blobpath=/v2/library/bigimg/blobs/$UP_BIG_LAYER
check_eq "big layer not fetched upstream yet" 0 \
    "$(up_reg_count GET "$blobpath")"
i=1
pids=""
while [ "$i" -le 12 ]; do
	curl -s -o "$NM_WORK/big$i" -w '%{http_code}' --max-time 120 \
	    "$NM_URL$blobpath" >"$NM_WORK/big$i.st" 2>/dev/null &
	pids="$pids $!"
	i=$((i + 1))
done
# And a Range client (as containerd sends) while the download runs.
sleep 0.05
curl -s -o "$NM_WORK/big.range" -w '%{http_code}' --max-time 120 \
    -H "Range: bytes=20000000-20000099" "$NM_URL$blobpath" \
    >"$NM_WORK/big.range.st" 2>/dev/null &
rpid=$!
i=1
for p in $pids; do
	rc=0
	wait "$p" || rc=$?
	check_eq "concurrent client $i curl exit" 0 "$rc"
	i=$((i + 1))
done
rc=0
wait "$rpid" || rc=$?
check_eq "concurrent Range client curl exit" 0 "$rc"
check_eq "concurrent Range client status" 206 "$(cat "$NM_WORK/big.range.st")"
tail -c +20000001 "$NM_WORK/big1" | head -c 100 >"$NM_WORK/want.range"
cmp -s "$NM_WORK/big.range" "$NM_WORK/want.range" &&
    ok "concurrent Range client bytes" ||
    bad "concurrent Range client bytes differ"
i=1
while [ "$i" -le 12 ]; do
	check_eq "concurrent client $i status" 200 "$(cat "$NM_WORK/big$i.st")"
	check_eq "concurrent client $i sha256" "$UP_BIG_LAYER" \
	    "$(nm_sha256 "$NM_WORK/big$i")"
	i=$((i + 1))
done
rm -f "$NM_WORK"/big[0-9]*
check_eq "12 concurrent cold clients: upstream GETs of the big layer" 1 \
    "$(up_reg_count GET "$blobpath")"
hex=${UP_BIG_LAYER#sha256:}
[ -f "$DATA/blobs/sha256/$(echo "$hex" | cut -c1-2)/$hex" ] &&
    ok "big layer is in the store" || bad "big layer is not in the store"

# The rest of bigimg's first pull (its config); then a second pull is
# served from the store: no new upstream request.
docker_blobs library/bigimg "$UP_DIR/m.big"
r0=$(up_reg_requests)
docker_blobs library/bigimg "$UP_DIR/m.big"
st=$(http_status "$NM_URL/v2/library/bigimg/manifests/latest" -I \
    -H "$ACCEPT_DOCKER")
check_eq "HEAD bigimg:latest again (tag fresh) status" 200 "$st"
st=$(http_status "$NM_URL/v2/library/bigimg/manifests/$UP_BIG_DG" \
    -H "$ACCEPT_DOCKER")
check_eq "bigimg by digest again status" 200 "$st"
st=$(http_status "$NM_URL/v2/library/busyv2/manifests/$UP_BUSYV2_DG" -I \
    -H "$ACCEPT_DOCKER")
check_eq "HEAD busyv2 by digest again status" 200 "$st"
check_eq "second pull: no new upstream request" "$r0" "$(up_reg_requests)"

# Upstream errors.
st=$(http_status "$NM_URL/v2/library/busyimg/manifests/nosuchtag" \
    -H "$ACCEPT_DOCKER")
nm_check_error "upstream 404 tag" 404 "$st" MANIFEST_UNKNOWN
zero=sha256:$(printf '%064d' 0)
st=$(http_status "$NM_URL/v2/library/busyimg/blobs/$zero")
nm_check_error "upstream 404 blob" 404 "$st" BLOB_UNKNOWN
st=$(http_status "$NM_URL/v2/library/nosuchrepo/manifests/latest" \
    -H "$ACCEPT_DOCKER")
check_eq "upstream unknown repository status" 404 "$st"
st=$(http_status "$NM_URL/v2/private/secret/manifests/latest" \
    -H "$ACCEPT_DOCKER")
nm_check_error "upstream 401 after auth (private/secret)" 403 "$st" DENIED

# An unconfigured ns: 404 NAME_UNKNOWN, and no connection to it at all.
cport=$(nm_free_port)
up_counter_start "$cport" "$NM_WORK/accepts"
for q in "ns=127.0.0.1:$cport" "ns=127.0.0.1%3A$cport" ns=quay.io \
    ns=ghcr.io.example.com; do
	st=$(http_status "$NM_URL/v2/library/busyimg/manifests/latest?$q" \
	    -H "$ACCEPT_DOCKER")
	nm_check_error "manifest with unconfigured $q" 404 "$st" NAME_UNKNOWN
	st=$(http_status "$NM_URL/v2/library/busyimg/blobs/$UP_BUSY_LAYER?$q")
	nm_check_error "blob with unconfigured $q" 404 "$st" NAME_UNKNOWN
done
sleep 0.5
check_eq "connections to the unconfigured ns port" 0 \
    "$(grep -c . "$NM_WORK/accepts" || true)"

# Stale-if-error: with --tag-ttl 0 every tag is re-checked; with the
# registry down the last stored manifest is served, and the log says so.
nm_stop
nm_restart --upstream "docker.io=$UP_REG_URL" --tag-ttl 0
st=$(http_status "$NM_URL/v2/library/busyimg/manifests/latest" \
    -H "$ACCEPT_DOCKER")
check_eq "tag with ttl 0, upstream up: status" 200 "$st"
up_registry_stop
st=$(http_status "$NM_URL/v2/library/busyimg/manifests/latest" \
    -H "$ACCEPT_DOCKER")
check_eq "tag with upstream down: status" 200 "$st"
check_eq "tag with upstream down: stored digest" "$UP_BUSY_DG" \
    "$(nm_sha256 "$NM_BODY")"
check_eq "tag with upstream down: Docker-Content-Digest" "$UP_BUSY_DG" \
    "$(hdr Docker-Content-Digest)"
st=$(http_status "$NM_URL/v2/library/busyv2/manifests/latest" -I \
    -H "$ACCEPT_DOCKER")
check_eq "HEAD tag with upstream down: status" 200 "$st"
check_eq "HEAD tag with upstream down: digest" "$UP_BUSYV2_DG" \
    "$(hdr Docker-Content-Digest)"
grep -qi stale "$NM_LOG" && ok "daemon log says stale" ||
    bad "daemon log has no line with 'stale'"
st=$(http_status "$NM_URL/v2/library/busyimg/blobs/$UP_BUSY_LAYER")
check_eq "stored blob with upstream down: status" 200 "$st"

# Nothing stored and the upstream down: 502 naming the upstream.
st=$(http_status "$NM_URL/v2/library/neverseen/manifests/latest" \
    -H "$ACCEPT_DOCKER")
check_eq "uncached tag with upstream down: status" 502 "$st"
msg=$(jq -r '.errors[0].message' "$NM_BODY" 2>/dev/null) ||
    msg="(no error JSON: $(head -c 200 "$NM_BODY"))"
case $msg in
*docker.io*|*"$UP_REG_ADDR"*) ok "502 message names the upstream ($msg)" ;;
*) bad "502 message names the upstream: '$msg'" ;;
esac
st=$(http_status "$NM_URL/v2/library/multi/manifests/$UP_MULTI_ARM64" \
    -H "$ACCEPT_DOCKER")
check_eq "uncached digest with upstream down: status" 502 "$st"
jq -e '.errors[0].code | type == "string"' "$NM_BODY" >/dev/null 2>&1 &&
    ok "uncached digest with upstream down: error JSON" ||
    bad "uncached digest with upstream down: no error JSON"

# --offline on the same data dir, registry up again: stored content is
# served, missing content fails, and the registry hears nothing.
nm_stop
up_registry_start
r0=$(up_reg_requests)
nm_restart --upstream "docker.io=$UP_REG_URL" --offline
for n in busyimg busyv2 multi bigimg; do
	case $n in
	busyimg) dg=$UP_BUSY_DG ;;
	busyv2) dg=$UP_BUSYV2_DG ;;
	multi) dg=$UP_MULTI_DG ;;
	bigimg) dg=$UP_BIG_DG ;;
	esac
	st=$(http_status "$NM_URL/v2/library/$n/manifests/latest" \
	    -H "$ACCEPT_DOCKER")
	check_eq "offline: $n:latest status" 200 "$st"
	check_eq "offline: $n:latest digest" "$dg" "$(nm_sha256 "$NM_BODY")"
done
docker_blobs library/bigimg "$UP_DIR/m.big"
docker_blobs library/busyimg "$UP_DIR/m.busy"
st=$(http_status "$NM_URL/v2/library/multi/manifests/$UP_MULTI_ARM64" \
    -H "$ACCEPT_DOCKER")
case $st in
404|502) ok "offline: uncached arm64 child fails ($st)" ;;
*) bad "offline: uncached arm64 child: status $st" ;;
esac
st=$(http_status "$NM_URL/v2/library/neverseen/manifests/latest" \
    -H "$ACCEPT_DOCKER")
case $st in
404|502) ok "offline: uncached tag fails ($st)" ;;
*) bad "offline: uncached tag: status $st" ;;
esac
check_eq "offline: no request reached the registry" "$r0" \
    "$(up_reg_requests)"

st=$(http_status "$NM_URL/v2/")
check_eq "/v2/ still answers" 200 "$st"
nm_stop
