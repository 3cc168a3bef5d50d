# tests/e2e_provenance.sh: a Nix image says where it comes from.  Its
# config carries org.opencontainers.image.source (the package repository)
# and org.opencontainers.image.revision (the commit its tag resolved to),
# and the packages asked for; skopeo inspect shows them.  Each layer of the
# OCI manifest names its store paths in an annotation, and those are the
# paths its tarball holds.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"

need git curl jq tar skopeo

ACCEPT_OCI="Accept: application/vnd.oci.image.manifest.v1+json"
REPO=$NM_WORK/repo
nm_pkgs_repo "$REPO"
$GIT tag v1
C1=$($GIT rev-parse HEAD)
sed -i 's/hello from nixmirror/hello v2/' "$REPO/default.nix"
$GIT commit -q -a -m "hello v2"
$GIT tag -a v2 -m "annotated v2"
C2=$($GIT rev-parse HEAD)
check_ne "two commits" "$C1" "$C2"

nm_start --pkgs-repo "file://$REPO" --build-timeout 120
for t in v1 v2; do
	nm_manifest nix/hello "$t" "$NM_WORK/m.$t" "$ACCEPT_OCI" >/dev/null
	cfg=$(jq -r .config.digest "$NM_WORK/m.$t")
	st=$(http_status "$NM_URL/v2/nix/hello/blobs/$cfg")
	check_eq "config of $t" 200 "$st"
	jq -c .config.Labels "$NM_BODY" >"$NM_WORK/labels.$t"
done
check_eq "v1's revision" "$C1" \
    "$(jq -r '."org.opencontainers.image.revision"' "$NM_WORK/labels.v1")"
check_eq "v2's revision (an annotated tag: its commit)" "$C2" \
    "$(jq -r '."org.opencontainers.image.revision"' "$NM_WORK/labels.v2")"
check_eq "the source is the package repository" "file://$REPO" \
    "$(jq -r '."org.opencontainers.image.source"' "$NM_WORK/labels.v1")"
check_eq "the packages asked for" hello \
    "$(jq -r '."dev.nixmirror.packages"' "$NM_WORK/labels.v1")"

# skopeo shows the labels.
got=$(skopeo inspect --tls-verify=false \
    "docker://127.0.0.1:$NM_PORT/nix/hello:v2" 2>"$NM_WORK/sk.err" |
    jq -r '.Labels."org.opencontainers.image.revision"') || true
check_eq "skopeo inspect shows the revision" "$C2" "$got"

# Each store-path layer's annotation is what its tarball holds.
n=0
for i in $(jq -r '.layers | keys[]' "$NM_WORK/m.v1"); do
	ann=$(jq -r --argjson i "$i" \
	    '.layers[$i].annotations."dev.nixmirror.store-paths" // empty' \
	    "$NM_WORK/m.v1")
	[ -n "$ann" ] || continue
	n=$((n + 1))
	dg=$(jq -r --argjson i "$i" '.layers[$i].digest' "$NM_WORK/m.v1")
	st=$(http_status "$NM_URL/v2/nix/hello/blobs/$dg")
	held=$(tar -tzf "$NM_BODY" |
	    sed -n 's|^\(\./\)\{0,1\}\(nix/store/[^/][^/]*\)/\{0,1\}$|/\2|p' |
	    sort -u | tr '\n' ' ' | sed 's/ $//')
	want=$(echo "$ann" | tr ' ' '\n' | sort | tr '\n' ' ' | sed 's/ $//')
	check_eq "layer $i names its store paths" "$want" "$held"
done
[ "$n" -gt 0 ] || bad "no layer has the store-paths annotation"
check_eq "the customisation layer has none" "" "$(jq -r \
    '.layers[-1].annotations // empty' "$NM_WORK/m.v1")"
nm_stop
