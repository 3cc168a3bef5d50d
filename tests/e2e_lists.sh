# tests/e2e_lists.sh: the lists of the pull API.  tags/list of a
# pull-through repository comes from the upstream (CNCF distribution) with
# n/last pagination that skopeo follows, is kept for the tag TTL, and is
# served stale, or from the tags the mirror resolved, when the upstream is
# down.  Referrers (OCI 1.1) come from an upstream's referrers API or its
# fallback tag sha256-<hex>, filtered by artifactType.  A Nix name lists
# latest and the tags and branches of --pkgs-repo.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"
. "$NM_TOP/tests/upstream/lib_upstream.sh"

need curl jq git skopeo sha256sum

SKOPEO="skopeo --policy $NM_WORK/policy.json"
echo '{"default": [{"type": "insecureAcceptAnything"}]}' >"$NM_WORK/policy.json"
MT_INDEX=application/vnd.oci.image.index.v1+json

up_start
for t in v1 v2 1.36 edge; do
	up_push busy "library/busyimg:$t" >/dev/null 2>&1 ||
	    fail "cannot push library/busyimg:$t"
done
ALL='["1.36","edge","latest","v1","v2"]'

# docker.io, so that skopeo (which sends no ns) lists through the mirror;
# containerd's ns works the same (ghcr.io below).
nm_start --upstream "docker.io=$UP_REG_URL" --upstream "ghcr.io=$UP_REG_URL" \
    --tag-ttl 300
Q="ns=docker.io"

# The whole list, sorted, under the name asked for.
st=$(http_status "$NM_URL/v2/library/busyimg/tags/list?$Q")
check_eq "tags/list" 200 "$st"
check_eq "its name" library/busyimg "$(jq -r .name "$NM_BODY")"
check_eq "all tags, sorted" "$ALL" "$(jq -c .tags "$NM_BODY")"
check_eq "no Link without n" "" "$(hdr Link)"

# skopeo lists them through the mirror as the upstream has them.
got=$($SKOPEO list-tags --tls-verify=false \
    "docker://127.0.0.1:$NM_PORT/library/busyimg" 2>"$NM_WORK/sk.err" |
    jq -c '.Tags | sort') || true
check_eq "skopeo list-tags through the mirror" "$ALL" "$got"
direct=$($SKOPEO list-tags --tls-verify=false \
    "docker://$UP_REG_ADDR/library/busyimg" 2>>"$NM_WORK/sk.err" |
    jq -c '.Tags | sort') || true
check_eq "the upstream's own list is the same" "$direct" "$got"

# Pages of 2, following each Link as a client does.
page=/v2/library/busyimg/tags/list?n=2\&$Q
pages=
while [ -n "$page" ]; do
	st=$(http_status "$NM_URL$page")
	[ "$st" = 200 ] || { bad "page $page: $st"; break; }
	pages="$pages$(jq -c .tags "$NM_BODY")"
	page=$(hdr Link | sed -n 's/^<\([^>]*\)>; rel="next"$/\1/p')
done
check_eq "three pages of at most 2" '["1.36","edge"]["latest","v1"]["v2"]' \
    "$pages"
st=$(http_status "$NM_URL/v2/library/busyimg/tags/list?n=4&ns=ghcr.io")
check_eq "a page under containerd's ns" '["1.36","edge","latest","v1"]' \
    "$(jq -c .tags "$NM_BODY")"
check_eq "its Link keeps the ns" \
    '</v2/library/busyimg/tags/list?n=4&last=v1&ns=ghcr.io>; rel="next"' \
    "$(hdr Link)"
st=$(http_status "$NM_URL/v2/library/busyimg/tags/list?last=v1&$Q")
check_eq "last=v1" '["v2"]' "$(jq -c .tags "$NM_BODY")"
st=$(http_status "$NM_URL/v2/library/busyimg/tags/list?n=0&$Q")
check_eq "n=0 is empty" '[]' "$(jq -c .tags "$NM_BODY")"
st=$(http_status "$NM_URL/v2/library/busyimg/tags/list?n=x&$Q")
nm_check_error "n=x" 400 "$st" PAGINATION_NUMBER_INVALID
st=$(http_status "$NM_URL/v2/library/busyimg/tags/list?last=a/b&$Q")
nm_check_error "a bad last" 400 "$st" TAG_INVALID
st=$(http_status "$NM_URL/v2/library/nothere/tags/list?$Q")
nm_check_error "an unknown repository" 404 "$st" NAME_UNKNOWN
st=$(curl -s -o /dev/null -w '%{http_code}' -I \
    "$NM_URL/v2/library/busyimg/tags/list?$Q")
check_eq "HEAD of tags/list" 200 "$st"

# Within the TTL the upstream is asked once for all of the above.
check_eq "one upstream tags/list per namespace within the TTL" 2 \
    "$(up_reg_count GET /v2/library/busyimg/tags/list)"

# Referrers: distribution 2.8 has no referrers API and no fallback tag
# here, so the list is empty, as an OCI index.
st=$(http_status "$NM_URL/v2/library/busyimg/referrers/$UP_BUSY_DG?$Q")
check_eq "referrers without any" 200 "$st"
check_eq "referrers are an index" "$MT_INDEX" "$(hdr Content-Type)"
check_eq "no referrers" 0 "$(jq '.manifests | length' "$NM_BODY")"
st=$(http_status "$NM_URL/v2/library/busyimg/referrers/sha256:xyz?$Q")
nm_check_error "referrers of a bad digest" 400 "$st" DIGEST_INVALID

# A manifest pulled through (busyv2) before the upstream goes away.
st=$(http_status "$NM_URL/v2/library/busyv2/manifests/latest?$Q" \
    -H "Accept: application/vnd.docker.distribution.manifest.v2+json")
check_eq "busyv2 pulled" 200 "$st"
nm_stop

# The upstream is down: the kept list is served though its TTL is over,
# and a repository never listed offers the tags the mirror resolved.
up_registry_stop
nm_restart --upstream "docker.io=$UP_REG_URL" --tag-ttl 0
st=$(http_status "$NM_URL/v2/library/busyimg/tags/list?$Q")
check_eq "tags/list with the upstream down" 200 "$st"
check_eq "the kept tags" "$ALL" "$(jq -c .tags "$NM_BODY")"
check_eq "the log says it serves what is kept" 1 \
    "$(grep -c "the tags of library/busyimg cannot be fetched.*serving what is kept" \
    "$NM_LOG" || true)"
st=$(http_status "$NM_URL/v2/library/busyv2/tags/list?$Q")
check_eq "an unlisted repository with the upstream down" 200 "$st"
check_eq "its resolved tags" '["latest"]' "$(jq -c .tags "$NM_BODY")"
st=$(http_status "$NM_URL/v2/library/busyimg/tags/list?n=1&last=edge&$Q")
check_eq "pages of the kept list" '["latest"]' "$(jq -c .tags "$NM_BODY")"
nm_stop
nm_restart --upstream "docker.io=$UP_REG_URL" --offline
st=$(http_status "$NM_URL/v2/library/busyimg/tags/list?$Q")
check_eq "tags/list offline" "$ALL" "$(jq -c .tags "$NM_BODY")"
nm_stop

# Referrers from an upstream with the API, and from one with the
# fallback tag.
up_bad_start --size 1000
nm_start --upstream "docker.io=$UP_BAD_URL"
m=$(up_bad_info library/refs manifest)
st=$(http_status "$NM_URL/v2/library/refs/referrers/$m")
check_eq "referrers" 200 "$st"
check_eq "two referrers" 2 "$(jq '.manifests | length' "$NM_BODY")"
check_eq "their types" \
    '["application/spdx+json","application/vnd.dev.cosign.artifact.sig.v1+json"]' \
    "$(jq -c '[.manifests[].artifactType] | sort' "$NM_BODY")"
sbom=$(jq -r '.manifests[] | select(.artifactType == "application/spdx+json")
    | .digest' "$NM_BODY")
st=$(http_status "$NM_URL/v2/library/refs/referrers/$m?artifactType=application/spdx%2Bjson")
check_eq "filtered by artifactType" '["application/spdx+json"]' \
    "$(jq -c '[.manifests[].artifactType]' "$NM_BODY")"
check_eq "the filter is named" artifactType "$(hdr OCI-Filters-Applied)"
got=$(curl -s -H "Accept: application/vnd.oci.image.manifest.v1+json" \
    "$NM_URL/v2/library/refs/manifests/$sbom" | sha256sum | cut -d' ' -f1)
check_eq "a referrer's manifest pulls by digest" "${sbom#sha256:}" "$got"
st=$(http_status "$NM_URL/v2/library/refs/referrers/$m")
check_eq "referrers again" 200 "$st"
check_eq "the upstream was asked once" 1 \
    "$(up_bad_count GET "/v2/library/refs/referrers/$m")"

m=$(up_bad_info library/reftag manifest)
st=$(http_status "$NM_URL/v2/library/reftag/referrers/$m")
check_eq "referrers by the fallback tag" 200 "$st"
check_eq "one referrer" '["application/spdx+json"]' \
    "$(jq -c '[.manifests[].artifactType]' "$NM_BODY")"
check_eq "the referrers API was tried" 1 \
    "$(grep -c "GET /v2/library/reftag/referrers/$m 404" "$UP_BAD_LOG" || true)"
check_eq "then the fallback tag" 1 \
    "$(grep -c "GET /v2/library/reftag/manifests/sha256-${m#sha256:} 200" \
    "$UP_BAD_LOG" || true)"
nm_stop

# A Nix name: latest and the repository's tags and branches that can be
# image tags.
REPO=$NM_WORK/repo
nm_pkgs_repo "$REPO"
$GIT tag v1
$GIT tag -a v2 -m "annotated"
$GIT branch dev
$GIT branch feature/x
nm_start --pkgs-repo "$REPO"
st=$(http_status "$NM_URL/v2/nix/shell/hello/tags/list")
check_eq "tags/list of a Nix name" 200 "$st"
check_eq "its name" nix/shell/hello "$(jq -r .name "$NM_BODY")"
check_eq "latest, the tags and the branches" '["dev","latest","main","v1","v2"]' \
    "$(jq -c .tags "$NM_BODY")"
st=$(http_status "$NM_URL/v2/nix/shell/hello/referrers/$UP_BUSY_DG")
check_eq "referrers of a Nix name" 200 "$st"
nm_stop
nm_start --pkgs-repo "$NM_WORK/no-such-repo"
st=$(http_status "$NM_URL/v2/nix/shell/hello/tags/list")
nm_check_error "an unreadable package repository" 502 "$st" UNKNOWN
check_contains "says what failed" "the package repository cannot be read" \
    "$(nm_error_message)"
nm_stop
nm_start
st=$(http_status "$NM_URL/v2/nix/shell/hello/tags/list")
check_eq "a local package set has latest" '["latest"]' \
    "$(jq -c .tags "$NM_BODY")"
nm_stop
