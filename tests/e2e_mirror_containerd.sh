# tests/e2e_mirror_containerd.sh: containerd pulls docker.io images through
# nixmirror with the hosts.toml the README shows, runs them, and pulls them
# again from a clean containerd store once the upstream (registry and token
# issuer) is gone.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"
. "$NM_TOP/tests/lib_containerd.sh"
. "$NM_TOP/tests/upstream/lib_upstream.sh"

need containerd ctr runc containerd-shim-runc-v2 curl jq
[ "$(id -u)" = 0 ] || skip "containerd needs root here"

up_start
up_selftest
nm_start --upstream "docker.io=$UP_REG_URL"

# The hosts.toml exactly as the README shows it for docker.io, with the
# mirror's address.  The server line is Docker Hub, which cannot be reached
# here: whatever is pulled came through nixmirror (with ?ns=docker.io).
HOSTS=$NM_WORK/certs.d
mkdir -p "$HOSTS/docker.io"
cat >"$NM_WORK/hosts.want" <<EOF
server = "https://registry-1.docker.io"

[host."http://mirror.example:5000"]
  capabilities = ["pull", "resolve"]
EOF
awk '
	/^```/ { if (inb) { if (hit) { printf "%s", blk; exit } inb = 0; next }
		 if ($0 ~ /^```toml/) { inb = 1; blk = ""; hit = 0 } next }
	inb { blk = blk $0 "\n"; if ($0 ~ /registry-1\.docker\.io/) hit = 1 }
    ' "$NM_TOP/README.md" >"$NM_WORK/hosts.readme"
if [ -s "$NM_WORK/hosts.readme" ]; then
	if cmp -s "$NM_WORK/hosts.readme" "$NM_WORK/hosts.want"; then
		ok "README's docker.io hosts.toml is the one tested"
	else
		bad "README's docker.io hosts.toml differs from the tested one: $(cat "$NM_WORK/hosts.readme")"
	fi
	cp "$NM_WORK/hosts.readme" "$NM_WORK/hosts.want"
else
	bad "README has no hosts.toml snippet with registry-1.docker.io"
fi
sed "s|mirror\.example:5000|$NM_ADDR|" "$NM_WORK/hosts.want" \
    >"$HOSTS/docker.io/hosts.toml"
grep -qF "[host.\"http://$NM_ADDR\"]" "$HOSTS/docker.io/hosts.toml" ||
    fail "the hosts.toml snippet has no [host.\"http://mirror.example:5000\"]"

ctd_start "$NM_WORK/ctd1"
REF=docker.io/library/busyimg:latest
ctr_do images pull --hosts-dir "$HOSTS" --snapshotter "$SNAP" "$REF"
ok "ctr images pull --hosts-dir $REF"
ctr_do images ls -q
grep -qx "$REF" "$NM_WORK/ctr.out" || fail "$REF not in ctr images ls"
ok "image listed"
ctd_check_digest "containerd has upstream's manifest digest" "$REF" \
    "$UP_BUSY_DG"
out=$(ctd_run "$REF" t1)
check_eq "ctr run with the image Cmd" "$UP_BUSY_LINE" "$out"
out=$(ctd_run "$REF" t2 /bin/sh -c 'echo sh-ok')
check_eq "ctr run /bin/sh" sh-ok "$out"

# The token flow happened: nixmirror asked the issuer for a pull token,
# and the registry served nixmirror the manifest and the layer.
n=$(up_tok_count "scope=repository:library/busyimg:pull")
[ "$n" -ge 1 ] && ok "nixmirror got $n token(s) for library/busyimg" ||
    bad "the token issuer never saw nixmirror ask for library/busyimg"
check_eq "registry served nixmirror the busyimg layer once" 1 \
    "$(up_reg_count GET "/v2/library/busyimg/blobs/$UP_BUSY_LAYER")"

# A multi-arch index: containerd takes only its platform's child, and so
# does nixmirror upstream.
REFM=docker.io/library/multi:latest
ctr_do images pull --hosts-dir "$HOSTS" --snapshotter "$SNAP" "$REFM"
ok "ctr images pull --hosts-dir $REFM"
out=$(ctd_run "$REFM" t3)
check_eq "ctr run the multi-arch image" "$UP_BUSY_LINE" "$out"
check_eq "arm64 child never fetched upstream" 0 \
    "$(up_reg_mentions "$UP_MULTI_ARM64")"

# The upstream goes away entirely; a fresh containerd pulls again from
# nixmirror's store and runs the image.
up_registry_stop
up_token_stop
ctd_stop kill
ctd_start "$NM_WORK/ctd2"
ctr_do images ls -q
check_eq "fresh containerd has no images" "" "$(cat "$NM_WORK/ctr.out")"
ctr_do images pull --hosts-dir "$HOSTS" --snapshotter "$SNAP" "$REF"
ok "ctr images pull $REF with the upstream down"
out=$(ctd_run "$REF" t4)
check_eq "ctr run with the upstream down" "$UP_BUSY_LINE" "$out"
ctr_do images pull --hosts-dir "$HOSTS" --snapshotter "$SNAP" "$REFM"
ok "ctr images pull $REFM with the upstream down"

ctr_do tasks ls -q
check_eq "no task left" "" "$(cat "$NM_WORK/ctr.out")"
ctd_stop kill
st=$(http_status "$NM_URL/v2/")
check_eq "/v2/ still answers" 200 "$st"
nm_stop
