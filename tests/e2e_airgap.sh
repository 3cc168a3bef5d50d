# tests/e2e_airgap.sh: the air-gapped site cache end to end.  A connected
# mirror prefetches a docker.io image (from the test upstream) and a Nix
# image; export writes them as an OCI layout tar that skopeo reads; a
# bundle with one flipped byte is refused and changes nothing; the good
# one is imported (twice: the second is a no-op) into a fresh data
# directory; serve --offline, with the upstream gone, serves both to
# containerd, which pulls and runs them with the original digests.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"
. "$NM_TOP/tests/lib_containerd.sh"
. "$NM_TOP/tests/upstream/lib_upstream.sh"

need containerd ctr runc containerd-shim-runc-v2 curl jq skopeo python3 tar
[ "$(id -u)" = 0 ] || skip "containerd needs root here"

up_start
up_selftest
nm_start --upstream "docker.io=$UP_REG_URL"
DOCK=docker.io/library/busyimg:latest
NIXI=nix/shell/cowsay:latest
printf '# the site list\n%s\n\n%s\n' "$DOCK" "$NIXI" >"$NM_WORK/list"

# Prefetch through the running mirror: both stored, each line naming it.
"$NM_BIN" prefetch --server "$NM_URL" -f "$NM_WORK/list" \
    >"$NM_WORK/pf.out" 2>"$NM_WORK/pf.err" ||
    fail "prefetch: $(cat "$NM_WORK/pf.err")"
DOCK_DG=$(awk -v r="$DOCK" '$1 == "stored" && $2 == r { print $3 }' \
    "$NM_WORK/pf.out")
NIX_DG=$(awk -v r="$NIXI" '$1 == "stored" && $2 == r { print $3 }' \
    "$NM_WORK/pf.out")
check_eq "prefetch stored the docker.io image with upstream's digest" \
    "$UP_BUSY_DG" "$DOCK_DG"
[ -n "$NIX_DG" ] && ok "prefetch built and stored $NIXI ($NIX_DG)" ||
    bad "prefetch did not store $NIXI: $(cat "$NM_WORK/pf.out" "$NM_WORK/pf.err")"
check_eq "the layer came from upstream once" 1 \
    "$(up_reg_count GET "/v2/library/busyimg/blobs/$UP_BUSY_LAYER")"

# A failing image is named, the exit is 1, and the rest are still stored.
rc=0
"$NM_BIN" prefetch --server "$NM_URL" nix/shell/nosuchpkg:latest "$DOCK" \
    >"$NM_WORK/pf2.out" 2>"$NM_WORK/pf2.err" || rc=$?
check_eq "prefetch with a missing package exits 1" 1 "$rc"
check_contains "the failure names the image and the package" \
    "nix/shell/nosuchpkg:latest" "$(grep failed "$NM_WORK/pf2.err")"
check_contains "the failure says why" "nosuchpkg" \
    "$(grep failed "$NM_WORK/pf2.err")"
grep -q "^stored $DOCK " "$NM_WORK/pf2.out" &&
    ok "the other image is still stored" ||
    bad "the other image is not reported stored: $(cat "$NM_WORK/pf2.out")"
nm_stop
SRC=$NM_DATA

# Export: an OCI layout tar whose index names both images in full.
B=$NM_WORK/site.tar
"$NM_BIN" export --data "$SRC" -o "$B" -f "$NM_WORK/list" \
    >"$NM_WORK/ex.out" 2>&1 || fail "export: $(cat "$NM_WORK/ex.out")"
ok "export wrote $(cat "$NM_WORK/ex.out")"
mkdir "$NM_WORK/lay"
tar -xf "$B" -C "$NM_WORK/lay"
check_eq "oci-layout marker" 1.0.0 \
    "$(jq -r .imageLayoutVersion "$NM_WORK/lay/oci-layout")"
check_eq "index.json names the docker.io image's manifest" "$UP_BUSY_DG" \
    "$(jq -r --arg r "$DOCK" '.manifests[] |
    select(.annotations["org.opencontainers.image.ref.name"] == $r) |
    .digest' "$NM_WORK/lay/index.json")"
check_eq "index.json names the Nix image's manifest" "$NIX_DG" \
    "$(jq -r --arg r "$NIXI" '.manifests[] |
    select(.annotations["org.opencontainers.image.ref.name"] == $r) |
    .digest' "$NM_WORK/lay/index.json")"
nref=$(jq '[.manifests[] | select(.annotations == null)] | length' \
    "$NM_WORK/lay/index.json")
[ "$nref" -ge 1 ] && ok "the Nix image's SBOM referrer is in the bundle" ||
    bad "no referrer in index.json: $(cat "$NM_WORK/lay/index.json")"
for f in "$NM_WORK"/lay/blobs/sha256/*; do
	[ "sha256:$(basename "$f")" = "$(nm_sha256 "$f")" ] ||
	    bad "bundle blob $(basename "$f") does not match its name"
done
ok "every bundle blob matches its digest"
rc=0
"$NM_BIN" export --data "$SRC" -o "$NM_WORK/no.tar" docker.io/library/absent:1 \
    >"$NM_WORK/ex2.out" 2>&1 || rc=$?
check_eq "export of an image not stored exits 1" 1 "$rc"
check_contains "the error names it" "docker.io/library/absent:1" \
    "$(cat "$NM_WORK/ex2.out")"
[ ! -e "$NM_WORK/no.tar" ] && ok "no bundle is left behind" ||
    bad "a failed export left $NM_WORK/no.tar"

# Another tool reads the bundle: skopeo copies the image out of it.
skopeo inspect --raw "oci-archive:$B:$DOCK" >"$NM_WORK/sk.json" ||
    fail "skopeo inspect oci-archive:$B:$DOCK"
check_eq "skopeo reads the manifest bytes" "$UP_BUSY_DG" \
    "$(nm_sha256 "$NM_WORK/sk.json")"
skopeo copy -q "oci-archive:$B:$NIXI" "dir:$NM_WORK/skdir" ||
    fail "skopeo copy oci-archive:$B:$NIXI"
ok "skopeo copies the Nix image out of the bundle"

# One flipped byte in the docker image's layer: refused, nothing stored.
nm_start --offline
nm_stop
DST=$NM_DATA
cp -a "$NM_WORK/lay" "$NM_WORK/bad"
python3 - "$NM_WORK/bad/blobs/sha256/${UP_BUSY_LAYER#sha256:}" <<'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 0x01
open(p, "wb").write(bytes(b))
EOF
(cd "$NM_WORK/bad" && tar -cf "$NM_WORK/bad.tar" oci-layout index.json blobs)
before=$(find "$DST" -type f | sort | xargs -r sha256sum | sha256sum)
rc=0
"$NM_BIN" import --data "$DST" "$NM_WORK/bad.tar" >"$NM_WORK/im.out" 2>&1 ||
    rc=$?
check_eq "import of a corrupt bundle exits 1" 1 "$rc"
check_contains "the error names the bad digest" "$UP_BUSY_LAYER" \
    "$(cat "$NM_WORK/im.out")"
check_eq "no blob file appeared" 0 \
    "$(find "$DST/blobs" -type f | wc -l)"
after=$(find "$DST" -type f | sort | xargs -r sha256sum | sha256sum)
check_eq "the data directory is byte for byte unchanged" "$before" "$after"

# A truncated bundle is refused the same way.
head -c $(($(stat -c %s "$B") / 2)) "$B" >"$NM_WORK/short.tar"
rc=0
"$NM_BIN" import --data "$DST" "$NM_WORK/short.tar" >"$NM_WORK/im.out" 2>&1 ||
    rc=$?
check_eq "import of a truncated bundle exits 1" 1 "$rc"
check_eq "still no blob file" 0 "$(find "$DST/blobs" -type f | wc -l)"

# The good bundle imports; a second import adds nothing.
"$NM_BIN" import --data "$DST" "$B" >"$NM_WORK/im.out" 2>&1 ||
    fail "import: $(cat "$NM_WORK/im.out")"
grep -q "^imported $DOCK $UP_BUSY_DG" "$NM_WORK/im.out" &&
    grep -q "^imported $NIXI $NIX_DG" "$NM_WORK/im.out" &&
    ok "import names both images with their digests" ||
    bad "import output: $(cat "$NM_WORK/im.out")"
"$NM_BIN" import --data "$DST" "$B" >"$NM_WORK/im2.out" 2>&1 ||
    fail "second import: $(cat "$NM_WORK/im2.out")"
check_contains "the second import stores no new blob" "0 new blobs" \
    "$(cat "$NM_WORK/im2.out")"

# Offline, with the upstream gone and no Nix build possible.
up_registry_stop
up_token_stop
nm_restart --offline
st=$(http_status "$NM_URL/v2/nix/shell/hello/manifests/latest" \
    -H "Accept: application/vnd.oci.image.manifest.v1+json")
check_eq "a Nix image never imported is 404 offline" 404 "$st"
check_contains "the error says the mirror is offline" "offline" \
    "$(cat "$NM_BODY")"

HOSTS=$NM_WORK/certs.d
mkdir -p "$HOSTS/docker.io" "$HOSTS/$NM_ADDR"
printf 'server = "https://registry-1.docker.io"\n\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' \
    "$NM_ADDR" >"$HOSTS/docker.io/hosts.toml"
printf 'server = "http://%s"\n\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' \
    "$NM_ADDR" "$NM_ADDR" >"$HOSTS/$NM_ADDR/hosts.toml"
ctd_start "$NM_WORK/ctd"
ctr_do images pull --hosts-dir "$HOSTS" --snapshotter "$SNAP" "$DOCK"
ok "containerd pulls $DOCK from the offline mirror"
ctd_check_digest "with the original digest" "$DOCK" "$UP_BUSY_DG"
out=$(ctd_run "$DOCK" a1)
check_eq "and runs it" "$UP_BUSY_LINE" "$out"
REF2=$NM_ADDR/$NIXI
ctr_do images pull --hosts-dir "$HOSTS" --snapshotter "$SNAP" "$REF2"
ok "containerd pulls the imported Nix image by its name and tag"
ctd_check_digest "with the original digest" "$REF2" "$NIX_DG"
out=$(ctd_run "$REF2" a2 /bin/cowsay moo)
check_eq "and runs it" "cowsay: moo" "$out"
grep -q " info build " "$NM_WORK/daemon1.log" ||
    fail "the connected mirror logged no build line to compare with"
grep -q " info build " "$NM_LOG" &&
    bad "the offline mirror built: $(grep -m1 ' info build ' "$NM_LOG")" ||
    ok "no Nix build ran on the offline mirror"
st=$(http_status "$NM_URL/v2/nix/shell/cowsay/referrers/$NIX_DG")
check_eq "the imported SBOM is listed as a referrer" 1 \
    "$(jq '.manifests | length' "$NM_BODY")"
# containerd reads the bundle itself too (another namespace, so the pulls
# above were not helped by it).
CTR_SAVED=$CTR
CTR="ctr --address $SOCK --namespace imported"
ctr_do images import "$B"
ctd_check_digest "ctr images import reads the bundle with the docker.io image" \
    "$DOCK" "$UP_BUSY_DG"
ctd_check_digest "and the Nix image" "docker.io/$NIXI" "$NIX_DG"
CTR=$CTR_SAVED
ctd_stop kill
st=$(http_status "$NM_URL/healthz")
check_eq "/healthz answers 200" 200 "$st"
check_eq "/healthz says ready" ready "$(jq -r .status "$NM_BODY")"
nm_stop

# prefetch --data starts a mirror of its own on the data directory.
NIXMIRROR_OFFLINE=1 "$NM_BIN" prefetch --data "$NM_WORK/own" \
    --pkgs-path "$NM_PKGS" nix/figlet:latest >"$NM_WORK/pf3.out" \
    2>"$NM_WORK/pf3.err" || fail "prefetch --data: $(cat "$NM_WORK/pf3.err")"
grep -q "^stored nix/figlet:latest sha256:" "$NM_WORK/pf3.out" &&
    ok "prefetch --data built and stored nix/figlet" ||
    bad "prefetch --data: $(cat "$NM_WORK/pf3.out" "$NM_WORK/pf3.err")"
"$NM_BIN" export --data "$NM_WORK/own" -o "$NM_WORK/own.tar" \
    nix/figlet:latest >/dev/null 2>&1 &&
    ok "and export finds it by name and tag" || bad "export of nix/figlet"

# Every subcommand has --help (exit 0, on stdout).
for c in serve prefetch export import gc pin unpin version; do
	"$NM_BIN" "$c" --help >"$NM_WORK/help.out" 2>&1 ||
	    bad "nixmirror $c --help exits non-zero"
	grep -q "nixmirror $c" "$NM_WORK/help.out" ||
	    bad "nixmirror $c --help does not show its usage"
done
ok "every subcommand has --help"
