# tests/e2e_containerd.sh: pull and run images with containerd's ctr, both
# with --plain-http and through a hosts.toml.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"
. "$NM_TOP/tests/lib_containerd.sh"

need containerd ctr runc containerd-shim-runc-v2 curl
[ "$(id -u)" = 0 ] || skip "containerd needs root here"

# The daemon is also nixmirror.invalid: names containerd sends with that
# ns are Nix images (--nix-ns).
nm_start --build-timeout 120 --nix-ns nixmirror.invalid
ctd_start "$NM_WORK/ctd"

# Pull with --plain-http and run.
REF=$NM_ADDR/nix/hello:latest
ctr_do images pull --plain-http --snapshotter "$SNAP" "$REF"
ok "ctr images pull --plain-http $REF"
ctr_do images ls -q
grep -qx "$REF" "$NM_WORK/ctr.out" || fail "$REF not in ctr images ls"
ok "image listed"
out=$(ctd_run "$REF" t1 /bin/hello)
check_eq "ctr run /bin/hello" "hello from nixmirror" "$out"
out=$(ctd_run "$REF" t2)
check_eq "ctr run with the image Cmd" "hello from nixmirror" "$out"

# Pull by digest.
dg=$(nm_manifest nix/hello latest "$NM_WORK/m")
ctr_do images pull --plain-http --snapshotter "$SNAP" "$NM_ADDR/nix/hello@$dg"
ok "ctr images pull by digest"

# The route the README documents: a hosts.toml for the registry.
HOSTS=$NM_WORK/hosts
mkdir -p "$HOSTS/$NM_ADDR"
cat >"$HOSTS/$NM_ADDR/hosts.toml" <<EOF
server = "http://$NM_ADDR"

[host."http://$NM_ADDR"]
  capabilities = ["pull", "resolve"]
EOF
REF2=$NM_ADDR/nix/shell/cowsay:latest
ctr_do images pull --hosts-dir "$HOSTS" --snapshotter "$SNAP" "$REF2"
ok "ctr images pull --hosts-dir $REF2"
out=$(ctd_run "$REF2" t4 /bin/cowsay moo)
check_eq "ctr run /bin/cowsay moo" "cowsay: moo" "$out"
out=$(ctd_run "$REF2" t5 /bin/sh -c 'test -d /tmp && test -w /tmp && echo tmp-ok')
check_eq "/bin/sh runs; /tmp is writable" tmp-ok "$out"
out=$(ctd_run "$REF2" t6 /bin/bash -c 'grep -c ^root: /etc/passwd')
check_eq "/bin/bash runs; /etc/passwd has root" 1 "$out"

# ctr falls back to plain HTTP for 127.0.0.1 by itself, so the above does
# not prove the hosts.toml is read.  A registry name that resolves nowhere
# does: only its hosts.toml leads to the daemon (which then sees ?ns=).
mkdir -p "$HOSTS/nixmirror.invalid"
cat >"$HOSTS/nixmirror.invalid/hosts.toml" <<EOF
server = "http://$NM_ADDR"

[host."http://$NM_ADDR"]
  capabilities = ["pull", "resolve"]
EOF
REF3=nixmirror.invalid/nix/figlet:latest
ctr_do images pull --hosts-dir "$HOSTS" --snapshotter "$SNAP" "$REF3"
ok "ctr images pull --hosts-dir $REF3"
out=$(ctd_run "$REF3" t7 /bin/figlet big text)
check_eq "ctr run /bin/figlet big text" "figlet: big text" "$out"

# Nothing left running; stop containerd and the daemon.
ctr_do tasks ls -q
check_eq "no task left" "" "$(cat "$NM_WORK/ctr.out")"
ctd_stop
nm_stop
