# tests/e2e_sbom.sh: every Nix image gets an SPDX 2.3 SBOM from its closure,
# built with it and served as its OCI 1.1 referrer: GET
# /v2/<name>/referrers/<image digest> lists exactly one SPDX artifact whose
# subject is the image; the SBOM lists every store path of the closure
# (nix-store -qR) with the references as relationships, the NAR hashes and
# sizes, and the licence and homepage of the package asked for; it passes
# the SPDX 2.3 format check and is byte-identical from a second, fresh
# data folder.  The referrers tag schema's fallback tag sha256-<hex> lists
# it too.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"

need curl jq python3 nix-store sha256sum tar node

ACCEPT_OCI="Accept: application/vnd.oci.image.manifest.v1+json"
SPDX=application/spdx+json
NAME=nix/shell/hello

nm_start
b0=$(nm_builds)
doci=$(nm_manifest "$NAME" latest "$NM_WORK/oci.json" "$ACCEPT_OCI")
ddocker=$(nm_manifest "$NAME" latest "$NM_WORK/docker.json")

# One referrer of each form, an SPDX artifact whose subject is the image.
st=$(http_status "$NM_URL/v2/$NAME/referrers/$doci")
check_eq "referrers of the image" 200 "$st"
check_eq "exactly one, an SPDX SBOM" "[\"$SPDX\"]" \
    "$(jq -c '[.manifests[].artifactType]' "$NM_BODY")"
art=$(jq -r '.manifests[0].digest' "$NM_BODY")
st=$(http_status "$NM_URL/v2/$NAME/manifests/$art" -H "$ACCEPT_OCI")
check_eq "the artifact manifest pulls by digest" 200 "$st"
check_eq "its digest" "$art" "$(nm_sha256 "$NM_BODY")"
check_eq "its subject is the image" "$doci" "$(jq -r .subject.digest "$NM_BODY")"
check_eq "its artifactType" "$SPDX" "$(jq -r .artifactType "$NM_BODY")"
check_eq "its subject's size" "$(wc -c <"$NM_WORK/oci.json" | tr -d ' ')" \
    "$(jq -r .subject.size "$NM_BODY")"
sbom=$(jq -r '.layers[0].digest' "$NM_BODY")
st=$(http_status "$NM_URL/v2/$NAME/blobs/$sbom")
check_eq "the SBOM blob" 200 "$st"
check_eq "its bytes match its digest" "$sbom" "$(nm_sha256 "$NM_BODY")"
cp "$NM_BODY" "$NM_WORK/sbom.json"

st=$(http_status "$NM_URL/v2/$NAME/referrers/$ddocker")
check_eq "the Docker form's referrer" "$ddocker" "$(
    curl -s -H "$ACCEPT_OCI" "$NM_URL/v2/$NAME/manifests/$(jq -r \
    '.manifests[0].digest' "$NM_BODY")" | jq -r .subject.digest)"
st=$(http_status "$NM_URL/v2/$NAME/referrers/$doci?artifactType=text/plain")
check_eq "another artifactType filters it out" 0 \
    "$(jq '.manifests | length' "$NM_BODY")"

# The referrers tag schema's fallback tag gives the same list.
st=$(http_status "$NM_URL/v2/$NAME/manifests/sha256-${doci#sha256:}" \
    -H "Accept: application/vnd.oci.image.index.v1+json")
check_eq "the fallback tag sha256-<hex>" 200 "$st"
check_eq "is an index" application/vnd.oci.image.index.v1+json \
    "$(hdr Content-Type)"
check_eq "its digest is its bytes'" "$(nm_sha256 "$NM_BODY")" \
    "$(hdr Docker-Content-Digest)"
check_eq "listing the SBOM" "$art" "$(jq -r '.manifests[0].digest' "$NM_BODY")"
zero=sha256-$(printf '%064d' 0)
st=$(http_status "$NM_URL/v2/$NAME/manifests/$zero")
nm_check_error "the fallback tag of an unknown digest" 404 "$st" \
    MANIFEST_UNKNOWN
check_eq "HEAD and GET did not build again" 1 "$(( $(nm_builds) - b0 ))"

# The SBOM is the closure: unpack the image and ask Nix.
nm_unpack "$NAME" latest "$NM_WORK/root"
paths=$(ls -d "$NM_WORK"/root/nix/store/* | sed "s|^$NM_WORK/root||")
[ -n "$paths" ] || fail "the image holds no store paths"
# shellcheck disable=SC2086
if out=$(python3 "$NM_TOP/tests/spdx_check.py" "$NM_WORK/sbom.json" \
    $paths 2>&1); then
	ok "the SBOM is valid SPDX 2.3 and is the closure, its references and NAR hashes"
else
	bad "the SBOM: $out"
fi
hello=$(jq -r '.packages[] | select(.name == "hello")' "$NM_WORK/sbom.json")
check_eq "hello's version" 1.0 "$(echo "$hello" | jq -r .versionInfo)"
check_eq "hello's licence from meta" GPL-3.0-or-later \
    "$(echo "$hello" | jq -r .licenseDeclared)"
check_eq "hello's homepage from meta" https://www.gnu.org/software/hello/ \
    "$(echo "$hello" | jq -r .homepage)"
hid=$(echo "$hello" | jq -r .SPDXID)
check_eq "the image contains the packages asked for" \
    "$(jq -r --arg h "$hid" '[.relationships[] | select(.spdxElementId ==
    "SPDXRef-image" and .relationshipType == "CONTAINS") |
    .relatedSpdxElement] | sort | join(" ")' "$NM_WORK/sbom.json" | tr ' ' '\n' |
    grep -c "^$hid$")" 1
check_eq "the namespace names the image" \
    "https://nixmirror.invalid/spdx/$doci" \
    "$(jq -r .documentNamespace "$NM_WORK/sbom.json")"

# Another name does not get this image's referrers.
st=$(http_status "$NM_URL/v2/nix/busybox/referrers/$doci")
check_eq "referrers under another name" 0 "$(jq '.manifests | length' \
    "$NM_BODY")"
st=$(http_status "$NM_URL/v2/nix/busybox/manifests/$art" -H "$ACCEPT_OCI")
nm_check_error "the artifact under another name" 404 "$st" MANIFEST_UNKNOWN
nm_stop

# A fresh data folder builds the same image and the same SBOM bytes.
nm_start
d2=$(nm_manifest "$NAME" latest "$NM_WORK/oci2.json" "$ACCEPT_OCI")
check_eq "the same image digest" "$doci" "$d2"
st=$(http_status "$NM_URL/v2/$NAME/referrers/$d2")
check_eq "the same referrer" "$art" "$(jq -r '.manifests[0].digest' "$NM_BODY")"
got=$(curl -s "$NM_URL/v2/$NAME/blobs/$sbom" | sha256sum | cut -d' ' -f1)
check_eq "the same SBOM bytes" "${sbom#sha256:}" "$got"
nm_stop
