# tests/e2e_secrets.sh: no secret leaves the process (issue 8).  A package
# repository reached over HTTP with a token in its URL, and a dead
# upstream: clients get short reasons with no URL, token or
# server path in them, and the log shows the userinfo as ***.  Credentials
# in an upstream's URL are refused at start without being shown.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"

need git curl jq python3

SECRET=s3cr3t-TOKEN-4711
REPO=$NM_WORK/srv/pkgs.git
GIT="git -c user.name=nixmirror-test -c user.email=test@nixmirror.invalid"
GIT="$GIT -c commit.gpgsign=false -c tag.gpgsign=false"

# The package set as a bare repository served by git's dumb HTTP protocol.
mkdir -p "$NM_WORK/src" "$NM_WORK/srv"
cp -R "$NM_PKGS/." "$NM_WORK/src/"
git init -q -b main "$NM_WORK/src"
$GIT -C "$NM_WORK/src" add -A .
$GIT -C "$NM_WORK/src" commit -q -m "package set"
$GIT -C "$NM_WORK/src" tag v1
git clone -q --bare "$NM_WORK/src" "$REPO"
git -C "$REPO" update-server-info
GPORT=$(nm_free_port)
python3 -m http.server --bind 127.0.0.1 --directory "$NM_WORK/srv" "$GPORT" \
    >"$NM_WORK/git-http.log" 2>&1 &
GPID=$!
nm_track "$GPID"
_n=0
until curl -fs "http://127.0.0.1:$GPORT/pkgs.git/HEAD" >/dev/null; do
	_n=$((_n + 1))
	[ "$_n" -lt 100 ] || fail "the git HTTP server did not start"
	sleep 0.1
done

# Fails when a response body or the log holds the secret or a server path.
no_secret()
{
	if grep -qF -- "$SECRET" "$NM_BODY" "$NM_HDRS"; then
		fail "$1: the response shows the token: $(head -c 300 "$NM_BODY")"
	fi
	if grep -qF -- "$NM_WORK" "$NM_BODY"; then
		fail "$1: the response shows a server path: $(head -c 300 "$NM_BODY")"
	fi
	if grep -qF -- "127.0.0.1:$GPORT" "$NM_BODY"; then
		fail "$1: the response shows the repository's address"
	fi
	ok "$1: no token, path or address in the response"
}

DEAD=$(nm_free_port)

# Credentials in an upstream's URL are refused at start, without showing
# them: they belong in the config file, not on a command line.
rc=0
"$NM_BIN" serve --listen "127.0.0.1:$DEAD" --data "$NM_WORK/nodata" \
    --upstream "dead.example=http://user:$SECRET@127.0.0.1:$DEAD" \
    >"$NM_WORK/start.out" 2>&1 || rc=$?
check_eq "userinfo in an upstream URL fails the start" 2 "$rc"
check_contains "the start error says where credentials go" "config file" \
    "$(cat "$NM_WORK/start.out")"
if grep -qF -- "$SECRET" "$NM_WORK/start.out"; then
	fail "the start error shows the token"
fi
ok "the start error does not show the token"

URL="http://nixmirror:$SECRET@127.0.0.1:$GPORT/pkgs.git"
nm_start --pkgs-repo "$URL" --tag-ttl 0 --build-timeout 120 \
    --upstream "dead.example=http://127.0.0.1:$DEAD"

# A tag the repository does not have: a short reason naming the tag.
st=$(http_status "$NM_URL/v2/nix/hello/manifests/v9" -H "$ACCEPT_DOCKER")
nm_check_error "unknown revision v9" 404 "$st" MANIFEST_UNKNOWN
check_eq "the reason for v9" "revision v9 not found in the package repository" \
    "$(nm_error_message)"
no_secret "unknown revision v9"

# The repository works through the URL with its token: v1 builds and runs.
d=$(nm_manifest nix/hello v1 "$NM_WORK/m")
check_contains "nix/hello:v1 built from the repository" "sha256:" "$d"

# A package the set does not have: the error names it, and no path.
st=$(http_status "$NM_URL/v2/nix/hello/nope9/manifests/v1" -H "$ACCEPT_DOCKER")
nm_check_error "unknown package" 404 "$st" MANIFEST_UNKNOWN
check_contains "the error names nope9" nope9 "$(nm_error_message)"
no_secret "unknown package"

# A package whose build fails: Nix's message has store paths; not shown.
st=$(http_status "$NM_URL/v2/nix/broken/manifests/v1" -H "$ACCEPT_DOCKER")
nm_check_error "a failing build" 500 "$st" UNKNOWN
no_secret "a failing build"
if grep -qF "/nix/store/" "$NM_BODY"; then
	fail "a failing build: the response shows a store path"
fi
ok "a failing build: no store path in the response"

# The repository goes away: a short reason, the detail only in the log.
kill "$GPID"
wait "$GPID" 2>/dev/null || true
nm_untrack "$GPID"
st=$(http_status "$NM_URL/v2/nix/hello/manifests/v2" -H "$ACCEPT_DOCKER")
nm_check_error "repository down" 500 "$st" UNKNOWN
check_eq "the reason when the repository is down" \
    "the package repository cannot be read" "$(nm_error_message)"
no_secret "repository down"

# An upstream that does not answer: 502 naming the namespace, not the URL.
st=$(http_status "$NM_URL/v2/library/app/manifests/latest?ns=dead.example" \
    -H "$ACCEPT_DOCKER")
nm_check_error "a dead upstream" 502 "$st" UNKNOWN
check_contains "the error names the upstream's namespace" dead.example \
    "$(nm_error_message)"
no_secret "a dead upstream"
if grep -qF -- "127.0.0.1:$DEAD" "$NM_BODY"; then
	fail "a dead upstream: the response shows the upstream's address"
fi
st=$(http_status "$NM_URL/v2/library/app/blobs/sha256:$(printf '%064d' 1)?ns=dead.example")
nm_check_error "a blob of a dead upstream" 502 "$st" UNKNOWN
no_secret "a blob of a dead upstream"

nm_stop

# The log: the detail is there, with the userinfo hidden; never the token.
if grep -qF -- "$SECRET" "$NM_LOG"; then
	fail "the log shows the token: $(grep -F -- "$SECRET" "$NM_LOG" | head -3)"
fi
ok "the log never shows the token"
check_contains "the log names the repository with its userinfo hidden" \
    "http://***@127.0.0.1:$GPORT/pkgs.git" "$(cat "$NM_LOG")"
check_contains "the log names the upstream's address" \
    "http://127.0.0.1:$DEAD" "$(cat "$NM_LOG")"
