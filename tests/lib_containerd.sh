# tests/lib_containerd.sh: a private containerd for the end-to-end tests
# (sourced after tests/lib.sh, POSIX sh).
#
# ctd_start DIR starts one with its config, root, state and sockets under
# DIR; ctr_do and ctd_run drive it; ctd_stop stops it.  The trap of lib.sh
# kills whatever is left (containerd, shims, tasks) and unmounts.

# Starts a private containerd under a dir and waits for its socket:
# ctd_start DIR.  Sets CTD, SOCK, CTD_PID, CTR (ctr on that socket, in the
# namespace nmtest) and SNAP (the snapshotter to pass to ctr).
ctd_start()
{
	CTD=$1
	SOCK=$CTD/containerd.sock
	mkdir -p "$CTD"
	cat >"$CTD/config.toml" <<CTDEOF
version = 2
root = "$CTD/root"
state = "$CTD/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$SOCK"

[ttrpc]
  address = "$SOCK.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$CTD/opt"
CTDEOF
	NM_LOGS="$NM_LOGS $CTD/containerd.log"
	containerd --config "$CTD/config.toml" >"$CTD/containerd.log" 2>&1 \
	    </dev/null &
	CTD_PID=$!
	nm_track "$CTD_PID"
	_i=0
	while ! ctr --address "$SOCK" version >/dev/null 2>&1; do
		nm_alive "$CTD_PID" || fail "containerd exited at start"
		[ "$_i" -lt 300 ] || fail "containerd does not answer in 30 s"
		sleep 0.1
		_i=$((_i + 1))
	done
	CTR="ctr --address $SOCK --namespace nmtest"
	ok "containerd started in $CTD"
	ctd_snapshotter
}

# Sets SNAP: overlayfs, unless this kernel or filesystem cannot do it.
ctd_snapshotter()
{
	SNAP=overlayfs
	$CTR plugins ls | grep -q 'io.containerd.snapshotter.v1 *overlayfs .* ok' ||
	    SNAP=native
	ok "snapshotter $SNAP"
}

# Stops the private containerd and unmounts what it left: ctd_stop [kill].
# It must exit within 10 s of SIGTERM, else the test fails; with kill, it
# gets SIGKILL then instead (and fails only if that does not stop it).
ctd_stop()
{
	if ! nm_kill_wait "$CTD_PID" TERM 100; then
		[ "${1:-}" = kill ] && nm_kill_wait "$CTD_PID" KILL 20 ||
		    fail "containerd does not stop"
	fi
	wait "$CTD_PID" 2>/dev/null || true
	nm_untrack "$CTD_PID"
	nm_umount_all
}

# Runs ctr (ctr_do ARGS...), its output left in $NM_WORK/ctr.out and
# ctr.err; the test fails, with that output, if ctr does.
ctr_do()
{
	$CTR "$@" >"$NM_WORK/ctr.out" 2>"$NM_WORK/ctr.err" || {
		cat "$NM_WORK/ctr.out" "$NM_WORK/ctr.err" >&2
		fail "ctr $*"
	}
}

# Checks that containerd holds REF at manifest DIGEST (ctr images ls):
# ctd_check_digest WHAT REF DIGEST.
ctd_check_digest()
{
	ctr_do images ls
	grep -F "$2" "$NM_WORK/ctr.out" | grep -qF "$3" && ok "$1" ||
	    bad "$1: containerd's $2 is not $3: $(grep -F "$2" "$NM_WORK/ctr.out")"
}

# Runs an image in a container removed afterwards and prints its standard
# output: ctd_run REF ID [ARGS...].  The test fails if ctr run does.
ctd_run()
{
	$CTR run --rm --snapshotter "$SNAP" "$@" \
	    >"$NM_WORK/run.out" 2>"$NM_WORK/run.err" </dev/null || {
		cat "$NM_WORK/run.out" "$NM_WORK/run.err" >&2
		fail "ctr run $*"
	}
	cat "$NM_WORK/run.out"
}
