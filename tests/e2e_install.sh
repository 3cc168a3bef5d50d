# tests/e2e_install.sh: make install (into a DESTDIR) puts the binary, the
# man page, the systemd unit and the unit's sysusers.d file in place; the
# unit passes systemd-analyze verify and its sandboxing scores "OK" or
# better in systemd-analyze security; systemd-sysusers makes the user from
# the file; the installed binary serves as an unprivileged user the way
# the unit runs it, and SIGHUP (the unit's ExecReload) reloads without a
# restart; make uninstall removes it all.
#
# This machine runs no systemd manager, so the unit itself is not started.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"

need make systemd-analyze systemd-sysusers setpriv curl jq
[ "$(id -u)" = 0 ] || skip "setpriv needs root"

# make of the build tree, on its own (not a part of make check's jobs).
mk()
{
	env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s --no-print-directory \
	    -C "$NM_BUILD" "$@"
}

D=$NM_WORK/dest
mk install DESTDIR="$D" >"$NM_WORK/install.out" 2>&1 ||
    fail "make install: $(cat "$NM_WORK/install.out")"
mkvar() { mk -f Makefile -f - print <<MKEOF
print:
	@echo \$($1)
MKEOF
}
BINDIR=$(mkvar bindir)
MANDIR=$(mkvar mandir)
UNITDIR=$(mkvar systemdsystemunitdir)
SYSUSERSDIR=$(mkvar sysusersdir)
[ -n "$BINDIR" ] && [ -n "$UNITDIR" ] || fail "no install dirs from make"

BIN=$D$BINDIR/nixmirror
[ -x "$BIN" ] && ok "the binary is installed in $BINDIR" ||
    bad "no $BIN"
check_contains "the installed binary runs" nixmirror "$("$BIN" version 2>&1)"
cmp -s "$D$MANDIR/man8/nixmirror.8" "$NM_TOP/nixmirror.8" &&
    ok "the man page is installed in $MANDIR/man8" ||
    bad "no man page at $D$MANDIR/man8/nixmirror.8"
UNIT=$D$UNITDIR/nixmirror.service
[ -f "$UNIT" ] || fail "no unit at $UNIT"
ok "the unit is installed in $UNITDIR"
check_eq "its ExecStart runs the installed binary" \
    "$BINDIR/nixmirror serve --data %S/nixmirror \$NIXMIRROR_ARGS" \
    "$(sed -n 's/^ExecStart=//p' "$UNIT")"
check_eq "it runs as its own user" nixmirror "$(sed -n 's/^User=//p' "$UNIT")"
check_eq "its data is the state directory /var/lib/nixmirror" nixmirror \
    "$(sed -n 's/^StateDirectory=//p' "$UNIT")"
check_eq "reload sends SIGHUP" '/bin/kill -HUP $MAINPID' \
    "$(sed -n 's/^ExecReload=//p' "$UNIT")"
check_eq "the file system is read-only to it" strict \
    "$(sed -n 's/^ProtectSystem=//p' "$UNIT")"

# systemd-analyze verify checks that ExecStart exists: let it see the
# DESTDIR binary (the only change), and the installed man page.
mkdir -p "$NM_WORK/verify"
sed "s|^ExecStart=$BINDIR/|ExecStart=$D$BINDIR/|" "$UNIT" \
    >"$NM_WORK/verify/nixmirror.service"
rc=0
MANPATH=$D$MANDIR SYSTEMD_LOG_LEVEL=notice systemd-analyze verify \
    "$NM_WORK/verify/nixmirror.service" >"$NM_WORK/verify.out" 2>&1 || rc=$?
check_eq "systemd-analyze verify passes: $(cat "$NM_WORK/verify.out")" 0 "$rc"
check_eq "and warns about nothing" "" "$(cat "$NM_WORK/verify.out")"
rc=0
systemd-analyze security --offline=yes --threshold=25 \
    "$NM_WORK/verify/nixmirror.service" >"$NM_WORK/sec.out" 2>&1 || rc=$?
check_eq "systemd-analyze security: exposure at most 2.5 ($(grep -o \
    'exposure level.*' "$NM_WORK/sec.out"))" 0 "$rc"

# The sysusers.d file makes the user, with its home the state directory.
SU=$D$SYSUSERSDIR/nixmirror.conf
[ -f "$SU" ] || fail "no sysusers.d file at $SU"
mkdir -p "$NM_WORK/sysroot/etc"
systemd-sysusers --root="$NM_WORK/sysroot" "$SU" >"$NM_WORK/su.out" 2>&1 ||
    fail "systemd-sysusers: $(cat "$NM_WORK/su.out")"
check_eq "systemd-sysusers makes the user nixmirror" /var/lib/nixmirror \
    "$(awk -F: '$1 == "nixmirror" { print $6 }' "$NM_WORK/sysroot/etc/passwd")"

# The installed binary, run as the unit runs it: an unprivileged user, the
# state directory as its working directory and data, extra flags as
# NIXMIRROR_ARGS would give them.
# The work dir is private (0700): let the user reach the binary and state.
chmod 0711 "$NM_WORK"
S=$NM_WORK/state
mkdir -p "$S"
chown 65534:65534 "$S"
chmod 0750 "$S"
echo '{}' >"$NM_WORK/policy.json"
chmod 0644 "$NM_WORK/policy.json"
PORT=$(nm_free_port)
(cd "$S" && exec setpriv --reuid=65534 --regid=65534 --clear-groups \
    env HOME="$S" "$BIN" serve --data "$S" --listen "127.0.0.1:$PORT" \
    --pkgs-path "$NM_PKGS" --policy "$NM_WORK/policy.json" --upstream docker.io=http://127.0.0.1:9) \
    >"$NM_WORK/svc.log" 2>&1 </dev/null &
NM_PID=$!
nm_track "$NM_PID"
NM_URL=http://127.0.0.1:$PORT
NM_ADDR=127.0.0.1:$PORT
NM_LOGS="$NM_LOGS $NM_WORK/svc.log"
nm_wait_up || fail "the installed binary does not serve as user 65534"
ok "the installed binary serves as an unprivileged user"
check_eq "/healthz says ready" ready \
    "$(curl -s --max-time 5 "$NM_URL/healthz" | jq -r .status)"
check_eq "the store is the state directory, owned by that user" 65534 \
    "$(stat -c %u "$S/nixmirror.db")"
kill -HUP "$NM_PID"
i=0
until grep -q 'policy reloaded from' "$NM_WORK/svc.log"; do
	[ "$i" -lt 100 ] || fail "no policy reload logged after SIGHUP"
	sleep 0.1
	i=$((i + 1))
done
nm_alive "$NM_PID" && ok "SIGHUP reloads and the server keeps running" ||
    bad "the server exited on SIGHUP"
check_eq "it still serves after the reload" 200 \
    "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$NM_URL/v2/")"
nm_stop

mk uninstall DESTDIR="$D" >"$NM_WORK/uninstall.out" 2>&1 ||
    fail "make uninstall: $(cat "$NM_WORK/uninstall.out")"
check_eq "make uninstall leaves no file" "" "$(find "$D" -type f)"
