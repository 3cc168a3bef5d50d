# tests/e2e_skopeo.sh: pull images with skopeo, unpack them with umoci, and
# check their contents, layer sharing and determinism.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"

need skopeo umoci curl jq python3 sha256sum

# skopeo reads a signature policy; use our own, not the host's.
POLICY=$NM_WORK/policy.json
echo '{"default":[{"type":"insecureAcceptAnything"}]}' >"$POLICY"
SKOPEO="skopeo --policy $POLICY"
export TMPDIR="$NM_WORK"

# Copies an image from the daemon into the OCI layout: pull NAME TAG.
pull()
{
	$SKOPEO copy -q --src-tls-verify=false \
	    "docker://$NM_ADDR/$1:latest" "oci:$NM_WORK/oci:$2" \
	    >"$NM_WORK/skopeo.log" 2>&1 || {
		cat "$NM_WORK/skopeo.log" >&2
		fail "skopeo copy $1"
	}
	ok "skopeo copy $1"
}

# The layer digests of an image in the daemon, one a line, sorted.
layers()
{
	$SKOPEO inspect --raw --tls-verify=false "docker://$NM_ADDR/$1:latest" \
	    >"$NM_WORK/raw" || fail "skopeo inspect --raw $1"
	jq -r '.layers[].digest' "$NM_WORK/raw" | sort
}

# The manifest digest of an image in the current daemon (schema2).
mdigest()
{
	nm_manifest "$1" latest "$NM_WORK/mdigest" "${2:-$ACCEPT_DOCKER}"
}

nm_start --build-timeout 120

pull nix/shell/hello shellhello
if [ "$(id -u)" = 0 ]; then
	umoci unpack --image "$NM_WORK/oci:shellhello" "$NM_WORK/bundle" \
	    >"$NM_WORK/umoci.log" 2>&1
else
	umoci unpack --rootless --image "$NM_WORK/oci:shellhello" \
	    "$NM_WORK/bundle" >"$NM_WORK/umoci.log" 2>&1
fi || { cat "$NM_WORK/umoci.log" >&2; fail "umoci unpack"; }
ok "umoci unpack"
ROOT=$NM_WORK/bundle/rootfs

[ -L "$ROOT/bin/hello" ] || [ -f "$ROOT/bin/hello" ] || fail "no /bin/hello"
hello=$(nm_resolve "$ROOT" /bin/hello)
[ -f "$hello" ] || fail "/bin/hello resolves to $hello, not a file in the rootfs"
ok "/bin/hello resolves inside the rootfs"
check_contains "/bin/hello is hello" "hello from nixmirror" "$(cat "$hello")"
for f in /bin/sh /bin/bash; do
	p=$(nm_resolve "$ROOT" "$f")
	[ -f "$p" ] || fail "$f does not resolve to a file in the rootfs"
	ok "$f resolves inside the rootfs"
done
passwd=$(nm_resolve "$ROOT" /etc/passwd)
grep -q '^root:' "$passwd" || fail "/etc/passwd has no root"
ok "/etc/passwd has root"
tmp=$(nm_resolve "$ROOT" /tmp)
check_eq "/tmp mode" 1777 "$(stat -c %a "$tmp")"
args=$(jq -r '.process.args | join(" ")' "$NM_WORK/bundle/config.json")
check_contains "shell image runs bash" bash "$args"

# Shared layers between two images.
pull nix/hello hello
pull nix/figlet figlet
layers nix/hello >"$NM_WORK/l.hello"
layers nix/figlet >"$NM_WORK/l.figlet"
shared=$(comm -12 "$NM_WORK/l.hello" "$NM_WORK/l.figlet" | wc -l)
[ "$shared" -ge 1 ] || fail "nix/hello and nix/figlet share no layer"
ok "nix/hello and nix/figlet share $shared layers"
dh=$(mdigest nix/hello)
df=$(mdigest nix/figlet)
check_ne "nix/hello and nix/figlet manifests differ" "$dh" "$df"
# The shared blobs are stored once in the layout.
for l in $(comm -12 "$NM_WORK/l.hello" "$NM_WORK/l.figlet"); do
	[ -f "$NM_WORK/oci/blobs/sha256/${l#sha256:}" ] ||
	    fail "shared layer $l not in the OCI layout"
done
ok "shared layers are in the OCI layout"

# Order and duplicates do not matter.
d1=$(mdigest nix/shell/hello)
d1o=$(mdigest nix/shell/hello "$ACCEPT_OCI")
d2=$(mdigest nix/hello/shell/hello)
check_eq "nix/hello/shell/hello is nix/shell/hello" "$d1" "$d2"
d3=$(mdigest nix/hello/shell)
check_eq "nix/hello/shell is nix/shell/hello" "$d1" "$d3"
nm_stop

# Determinism: a second daemon with a fresh data dir gives the same bytes.
nm_start --build-timeout 120
d4=$(mdigest nix/hello/shell)
check_eq "a fresh daemon gives the same schema2 digest" "$d1" "$d4"
d4o=$(mdigest nix/hello/shell "$ACCEPT_OCI")
check_eq "a fresh daemon gives the same OCI digest" "$d1o" "$d4o"
d5=$(mdigest nix/hello)
check_eq "a fresh daemon gives the same nix/hello digest" "$dh" "$d5"
nm_stop
