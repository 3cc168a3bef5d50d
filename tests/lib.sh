# tests/lib.sh: shared helpers of the end-to-end tests (sourced, POSIX sh).
#
# Each test runs from the build dir with NM_TOP (source dir) and NM_BUILD
# (build dir) in the environment.  It gets a private work dir, a trap that
# stops everything it started and removes the work dir, and prints the logs
# of what it started when it fails.  Exit 0 pass, 77 skip, else fail.

set -eu

: "${NM_TOP:=$(cd "$(dirname "$0")/.." && pwd)}"
: "${NM_BUILD:=$(pwd)}"
NM_BIN=$NM_BUILD/nixmirror
NM_TEST=$(basename "$0" .sh)
NM_PKGS=$NM_TOP/tests/pkgs

# Media types.
MT_DOCKER=application/vnd.docker.distribution.manifest.v2+json
MT_OCI=application/vnd.oci.image.manifest.v1+json
MT_DLIST=application/vnd.docker.distribution.manifest.list.v2+json
MT_OINDEX=application/vnd.oci.image.index.v1+json
ACCEPT_DOCKER="Accept: $MT_DOCKER, $MT_DLIST, $MT_OCI, $MT_OINDEX"
ACCEPT_OCI="Accept: $MT_OCI, $MT_OINDEX"

# The daemon logs one line per image build (nix/build.c: "build KEY: ..."
# or "build KEY failed: ..."), an extended regular expression.
: "${NM_BUILD_RE:=^[^ ]+ (info|warn) build }"

NM_PIDS=""		# every background process started, for the trap
NM_LOGS=""		# every log file, printed on failure
NM_NDAEMON=0
NM_PASSED=0
NM_FAILED=0

# The work dir: short, so unix socket paths under it stay short.
NM_WORK=$(mktemp -d "/tmp/nm-$NM_TEST.XXXXXX")

# Prints a message and fails the test at once.
fail()
{
	echo "FAIL: $NM_TEST: $*" >&2
	exit 1
}

# Skips the test (77), unless on CI where everything must be present.
skip()
{
	if [ -n "${CI:-}" ]; then
		fail "would skip on CI: $*"
	fi
	echo "SKIP: $NM_TEST: $*" >&2
	exit 77
}

# Records a passed check.
ok()
{
	NM_PASSED=$((NM_PASSED + 1))
	echo "ok - $*"
}

# Records a failed check; the test goes on and fails at the end.
bad()
{
	NM_FAILED=$((NM_FAILED + 1))
	echo "not ok - $*"
	echo "FAIL: $NM_TEST: $*" >&2
}

# Checks two strings are equal: check_eq WHAT EXPECTED GOT.
check_eq()
{
	if [ "$2" = "$3" ]; then
		ok "$1"
	else
		bad "$1: expected '$2', got '$3'"
	fi
}

# Checks two strings differ: check_ne WHAT A B.
check_ne()
{
	if [ "$2" != "$3" ]; then
		ok "$1"
	else
		bad "$1: both are '$2'"
	fi
}

# Checks a string contains another: check_contains WHAT NEEDLE HAYSTACK.
check_contains()
{
	case $3 in
	*"$2"*) ok "$1" ;;
	*) bad "$1: '$2' not in '$3'" ;;
	esac
}

# Needs commands; skips (off CI) when one is missing.
need()
{
	for _c; do
		command -v "$_c" >/dev/null 2>&1 || skip "$_c not installed"
	done
}

# Whether a process still runs (a zombie does not).
nm_alive()
{
	_st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	_st=${_st##*) }
	_st=${_st%% *}
	[ -n "$_st" ] && [ "$_st" != Z ] && [ "$_st" != X ]
}

# Waits up to $2 tenths of a second for the shell condition $1 (eval'd,
# its output dropped) to hold; 0, or 1 when it never did.
nm_until()
{
	_n=0
	until eval "$1" >/dev/null 2>&1; do
		_n=$((_n + 1))
		[ "$_n" -lt "$2" ] || return 1
		sleep 0.1
	done
}

# Sends a signal and waits up to $3 tenths of a second for the exit.
nm_kill_wait()
{
	kill "-$2" "$1" 2>/dev/null || return 0
	_i=0
	while nm_alive "$1" && [ "$_i" -lt "$3" ]; do
		sleep 0.1
		_i=$((_i + 1))
	done
	! nm_alive "$1"
}

# Unmounts whatever a test left mounted under the work dir.
nm_umount_all()
{
	awk -v w="$NM_WORK/" 'index($2, w) == 1 { print $2 }' /proc/self/mounts |
	    sort -r | while read -r _m; do
		umount "$_m" 2>/dev/null || umount -l "$_m" 2>/dev/null || true
	done
}

# The EXIT trap: stops everything, prints logs on failure, removes the work dir.
nm_cleanup()
{
	_status=$?
	set +e
	if [ "$_status" = 0 ] && [ "$NM_FAILED" != 0 ]; then
		_status=1
	fi
	for _p in $NM_PIDS; do
		nm_kill_wait "$_p" TERM 50 || nm_kill_wait "$_p" KILL 20
	done
	# Container shims and their tasks carry our work dir on the command line.
	for _p in $(grep -l -s -F "$NM_WORK/" /proc/[0-9]*/cmdline |
	    cut -d/ -f3); do
		[ "$_p" != $$ ] && kill -KILL "$_p" 2>/dev/null
	done
	nm_umount_all
	if [ "$_status" != 0 ] && [ "$_status" != 77 ]; then
		for _l in $NM_LOGS; do
			[ -f "$_l" ] || continue
			echo "---- $_l (last 150 lines)" >&2
			tail -n 150 "$_l" >&2
		done
	fi
	rm -rf --one-file-system "$NM_WORK"
	echo "$NM_TEST: $NM_PASSED passed, $NM_FAILED failed (exit $_status)"
	exit "$_status"
}
trap nm_cleanup EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM

# Prints the README's code block of a language that contains a pattern
# (an awk regex), with the mirror's address for mirror.example:5000:
# nm_readme_block LANG REGEX.  Fails when there is none.
nm_readme_block()
{
	_blk=$(awk -v lang="$1" -v pat="$2" '
	    $0 == "```" lang { inblk = 1; buf = ""; next }
	    inblk && /^```/ { inblk = 0; if (buf ~ pat) { printf "%s", buf; exit } }
	    inblk { buf = buf $0 "\n" }' "$NM_TOP/README.md")
	[ -n "$_blk" ] || fail "no $1 block with $2 in the README"
	printf '%s\n' "$_blk" | sed "s/mirror\.example:5000/$NM_ADDR/g"
}

# Prints a free loopback TCP port.
nm_free_port()
{
	if command -v python3 >/dev/null 2>&1; then
		python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
		return
	fi
	# No python: a random port nobody listens on (from /proc/net/tcp).
	_n=0
	while [ "$_n" -lt 100 ]; do
		_p=$(( ($$ * 7919 + _n * 104729 + $(date +%N | sed 's/^0*//;s/^$/0/')) % 30000 + 20000 ))
		_hex=$(printf '%04X' "$_p")
		if ! awk 'NR > 1 { print $2 }' /proc/net/tcp |
		    grep -q ":$_hex\$"; then
			echo "$_p"
			return
		fi
		_n=$((_n + 1))
	done
	fail "no free port"
}

# Records a background process for the trap.
nm_track()
{
	NM_PIDS="$NM_PIDS $1"
}

# Forgets a process that has been waited for (its pid may be reused).
nm_untrack()
{
	_left=""
	for _p in $NM_PIDS; do
		[ "$_p" = "$1" ] || _left="$_left $_p"
	done
	NM_PIDS=$_left
}

# Starts a daemon in the background and waits until /v2/ answers.  Sets
# NM_PID, NM_PORT, NM_ADDR, NM_URL, NM_DATA, NM_LOG.  Extra args are passed
# on; --pkgs-path tests/pkgs is added unless --pkgs-path or --pkgs-repo is.
nm_start()
{
	[ -x "$NM_BIN" ] || fail "no daemon binary $NM_BIN"
	NM_NDAEMON=$((NM_NDAEMON + 1))
	NM_DATA=$NM_WORK/data$NM_NDAEMON
	mkdir -p "$NM_DATA"
	nm_launch "$@"
}

# Starts a daemon again on the data dir of the previous one (stop that one
# first), with new args; sets what nm_start sets.  nm_restart [ARGS...]
nm_restart()
{
	[ -n "${NM_DATA:-}" ] || fail "nm_restart before nm_start"
	NM_NDAEMON=$((NM_NDAEMON + 1))
	nm_launch "$@"
}

# Runs a daemon on NM_DATA with a fresh log and a free port, and waits for
# it (nm_start and nm_restart).
nm_launch()
{
	_pkgs=1
	for _a; do
		case $_a in
		--pkgs-path|--pkgs-repo|--pkgs-path=*|--pkgs-repo=*) _pkgs=0 ;;
		esac
	done
	if [ "$_pkgs" = 1 ]; then
		set -- --pkgs-path "$NM_PKGS" "$@"
	fi
	NM_LOG=$NM_WORK/daemon$NM_NDAEMON.log
	NM_LOGS="$NM_LOGS $NM_LOG"
	_try=0
	while :; do
		# NM_FIXED_PORT: a port the test chose (replicas name each
		# other's before they start).
		NM_PORT=${NM_FIXED_PORT:-$(nm_free_port)}
		NM_ADDR=127.0.0.1:$NM_PORT
		NM_URL=http://$NM_ADDR
		# No test may reach past loopback: unless the test names its
		# own, docker.io's upstream is a closed loopback port (the
		# first --upstream of a namespace wins).
		NIXMIRROR_OFFLINE=1 "$NM_BIN" serve --listen "$NM_ADDR" \
		    --data "$NM_DATA" "$@" --upstream docker.io=http://127.0.0.1:9 \
		    >>"$NM_LOG" 2>&1 </dev/null &
		NM_PID=$!
		nm_track "$NM_PID"
		if nm_wait_up; then
			return 0
		fi
		# The port may have been taken in between: try another.
		_try=$((_try + 1))
		nm_alive "$NM_PID" && fail "daemon does not answer /v2/ in 30 s"
		[ "$_try" -lt 3 ] && [ -z "${NM_FIXED_PORT:-}" ] ||
		    fail "daemon exited at start"
	done
}

# Waits (30 s at most) for the current daemon's /v2/ to answer 200.
nm_wait_up()
{
	_i=0
	while [ "$_i" -lt 300 ]; do
		nm_alive "$NM_PID" || return 1
		_code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
		    "$NM_URL/v2/" 2>/dev/null) || true
		[ "$_code" = 200 ] && return 0
		# A daemon serving https (its test checks the certificate).
		_code=$(curl -sk -o /dev/null -w '%{http_code}' --max-time 2 \
		    "https://$NM_ADDR/v2/" 2>/dev/null) || true
		[ "$_code" = 200 ] && return 0
		sleep 0.1
		_i=$((_i + 1))
	done
	return 1
}

# Stops the current daemon with SIGTERM; fails unless it exits 0 in 20 s.
nm_stop()
{
	kill -TERM "$NM_PID" || fail "daemon already gone"
	_i=0
	while nm_alive "$NM_PID" && [ "$_i" -lt 200 ]; do
		sleep 0.1
		_i=$((_i + 1))
	done
	nm_alive "$NM_PID" && fail "daemon still runs 20 s after SIGTERM"
	_rc=0
	wait "$NM_PID" || _rc=$?
	nm_untrack "$NM_PID"
	check_eq "daemon exit status after SIGTERM" 0 "$_rc"
}

# The number of builds the current daemon has logged.
nm_builds()
{
	grep -cE -- "$NM_BUILD_RE" "$NM_LOG" || true
}

# Does a request; prints the status, keeps the body in $NM_BODY and the
# headers in $NM_HDRS.  http_status URL [curl args...]
NM_BODY=$NM_WORK/body
NM_HDRS=$NM_WORK/headers
http_status()
{
	_url=$1
	shift
	curl -s -o "$NM_BODY" -D "$NM_HDRS" -w '%{http_code}' \
	    --max-time 120 "$@" "$_url" || echo "curl-failed-$?"
}

# Prints a header of the last response (the last one if repeated).
hdr()
{
	nm_hdr_of "$NM_HDRS" "$1"
}

# Prints a header of a file of response headers (the last one if
# repeated): nm_hdr_of FILE NAME.
nm_hdr_of()
{
	tr -d '\r' <"$1" | awk -v h="$2" '
	    { i = index($0, ":") }
	    i > 0 && tolower(substr($0, 1, i - 1)) == tolower(h) {
		v = substr($0, i + 1); sub(/^[ \t]+/, "", v); last = v
	    }
	    END { print last }'
}

# Prints "sha256:<hex>" of a file.
nm_sha256()
{
	echo "sha256:$(sha256sum <"$1" | cut -d' ' -f1)"
}

# Prints the size of a file in bytes.
nm_size()
{
	wc -c <"$1" | tr -d ' '
}

# Checks the last response is an OCI error: nm_check_error WHAT STATUS
# GOT-STATUS CODE.
nm_check_error()
{
	check_eq "$1: status" "$2" "$3"
	_code=$(jq -r '.errors[0].code' "$NM_BODY" 2>/dev/null) ||
	    fail "$1: body is not error JSON: $(head -c 300 "$NM_BODY")"
	check_eq "$1: error code" "$4" "$_code"
	jq -e '.errors[0].message | type == "string"' "$NM_BODY" >/dev/null ||
	    fail "$1: error has no message"
}

# The message of the last error response.
nm_error_message()
{
	jq -r '.errors[0].message' "$NM_BODY"
}

# GETs a manifest into FILE and prints its digest, checking the status and
# the digest header: nm_manifest NAME REF FILE [ACCEPT-HEADER].
nm_manifest()
{
	_st=$(http_status "$NM_URL/v2/$1/manifests/$2" \
	    -H "${4:-$ACCEPT_DOCKER}")
	[ "$_st" = 200 ] ||
	    fail "GET $1:$2: status $_st: $(head -c 400 "$NM_BODY")"
	cp "$NM_BODY" "$3"
	_dg=$(hdr Docker-Content-Digest)
	[ "$_dg" = "$(nm_sha256 "$3")" ] ||
	    fail "GET $1:$2: Docker-Content-Digest $_dg is not the body's"
	echo "$_dg"
}

# Resolves a path inside a root dir as a chroot would, following symlinks
# (absolute ones relative to the root); prints the host path.
nm_resolve()
{
	python3 - "$1" "$2" <<'EOF'
import os, sys
root, path = sys.argv[1].rstrip("/"), sys.argv[2]
parts = [p for p in path.split("/") if p]
cur, hops = "", 0
while parts:
    p = parts.pop(0)
    if p == ".":
        continue
    if p == "..":
        cur = os.path.dirname(cur)
        continue
    nxt = cur + "/" + p
    if os.path.islink(root + nxt):
        hops += 1
        if hops > 40:
            sys.exit("symlink loop at " + nxt)
        t = os.readlink(root + nxt)
        if t.startswith("/"):
            cur = ""
        parts = [x for x in t.split("/") if x] + parts
    else:
        cur = nxt
print(root + cur)
EOF
}

# Makes DIR a git repository of the test package set with one commit on
# main, and sets GIT to a git command for it (no signing, a test
# identity): nm_pkgs_repo DIR.
nm_pkgs_repo()
{
	GIT="git -C $1 -c user.name=nixmirror-test"
	GIT="$GIT -c user.email=test@nixmirror.invalid"
	GIT="$GIT -c commit.gpgsign=false -c tag.gpgsign=false"
	mkdir -p "$1"
	cp -R "$NM_PKGS/." "$1/"
	git init -q -b main "$1"
	$GIT add -A .
	$GIT commit -q -m "package set"
}

# Fetches an image's layers with curl (checking digests) and unpacks them in
# order into DIR: nm_unpack NAME REF DIR.
nm_unpack()
{
	_m=$NM_WORK/unpack.manifest
	nm_manifest "$1" "$2" "$_m" >/dev/null
	mkdir -p "$3"
	for _l in $(jq -r '.layers[].digest' "$_m"); do
		_st=$(http_status "$NM_URL/v2/$1/blobs/$_l")
		[ "$_st" = 200 ] || fail "GET blob $_l of $1:$2: status $_st"
		[ "$(nm_sha256 "$NM_BODY")" = "$_l" ] ||
		    fail "blob $_l of $1:$2 has another digest"
		tar -xzf "$NM_BODY" -C "$3" ||
		    fail "layer $_l of $1:$2 does not unpack"
	done
}

