# tests/e2e_repo.sh: a git repository as the package set: tags, branches and
# commits as image tags, moving branches, one build per commit (also for
# tags of one commit asked at once).

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"

need git curl jq tar python3 sha256sum

REPO=$NM_WORK/repo

# Replaces what hello prints in every file of the repo and commits.
rehello()
{
	grep -rlF --exclude-dir=.git "$1" "$REPO" >"$NM_WORK/files" ||
	    fail "'$1' is in no file of the package set"
	while read -r f; do
		sed -i "s/$1/$2/g" "$f"
	done <"$NM_WORK/files"
	$GIT commit -q -a -m "hello prints $2"
}

# The /bin/hello of an image at a tag: hello_of TAG.
hello_of()
{
	_d=$NM_WORK/root.$1
	rm -rf "$_d"
	nm_unpack nix/hello "$1" "$_d"
	_p=$(nm_resolve "$_d" /bin/hello)
	[ -f "$_p" ] || fail "/bin/hello of nix/hello:$1 is not a file"
	cat "$_p"
}

nm_pkgs_repo "$REPO"
$GIT tag v1
$GIT tag -a v1.0-ann -m "annotated v1"
C1=$($GIT rev-parse HEAD)
$GIT checkout -q -b dev
rehello "hello from nixmirror" "hello v2"
$GIT tag -a v2 -m "annotated v2"
C2=$($GIT rev-parse HEAD)
$GIT checkout -q main
check_ne "two commits" "$C1" "$C2"

nm_start --pkgs-repo "$REPO" --tag-ttl 0 --build-timeout 120 --max-builds 3
b0=$(nm_builds)

dv1=$(nm_manifest nix/hello v1 "$NM_WORK/m")
dlatest=$(nm_manifest nix/hello latest "$NM_WORK/m")
ddev=$(nm_manifest nix/hello dev "$NM_WORK/m")
dc2=$(nm_manifest nix/hello "$C2" "$NM_WORK/m")
dc1=$(nm_manifest nix/hello "$C1" "$NM_WORK/m")
dann=$(nm_manifest nix/hello v1.0-ann "$NM_WORK/m")
dv2=$(nm_manifest nix/hello v2 "$NM_WORK/m")
check_eq "v1 is latest (main)" "$dv1" "$dlatest"
check_eq "v1 is its commit" "$dv1" "$dc1"
check_eq "annotated tag v1.0-ann is v1" "$dv1" "$dann"
check_ne "dev differs from main" "$dv1" "$ddev"
check_eq "dev is its commit" "$ddev" "$dc2"
check_eq "annotated tag v2 is dev" "$ddev" "$dv2"
check_eq "two commits made two builds" $((b0 + 2)) "$(nm_builds)"

out=$(hello_of v1)
check_contains "/bin/hello at v1" "hello from nixmirror" "$out"
out=$(hello_of dev)
check_contains "/bin/hello at dev" "hello v2" "$out"
case $out in *"hello from nixmirror"*) fail "dev still has the old hello" ;; esac
ok "dev has no old hello"

st=$(http_status "$NM_URL/v2/nix/hello/manifests/nosuchtag" -H "$ACCEPT_DOCKER")
nm_check_error "unknown tag" 404 "$st" MANIFEST_UNKNOWN
zero=$(printf '%040d' 0)
st=$(http_status "$NM_URL/v2/nix/hello/manifests/$zero" -H "$ACCEPT_DOCKER")
nm_check_error "unknown commit" 404 "$st" MANIFEST_UNKNOWN
st=$(http_status "$NM_URL/v2/nix/hello/nope9/manifests/v1" -H "$ACCEPT_DOCKER")
nm_check_error "unknown package at a tag" 404 "$st" MANIFEST_UNKNOWN
check_contains "message names nope9" nope9 "$(nm_error_message)"

# Move dev: with --tag-ttl 0 the next request sees the new commit.
$GIT checkout -q dev
rehello "hello v2" "hello v3"
C3=$($GIT rev-parse HEAD)
$GIT checkout -q main
b1=$(nm_builds)
ddev3=$(nm_manifest nix/hello dev "$NM_WORK/m")
check_ne "moved dev gives a new image" "$ddev" "$ddev3"
dc3=$(nm_manifest nix/hello "$C3" "$NM_WORK/m")
check_eq "moved dev is its new commit" "$ddev3" "$dc3"
out=$(hello_of dev)
check_contains "/bin/hello at the moved dev" "hello v3" "$out"
dold=$(nm_manifest nix/hello "$C2" "$NM_WORK/m")
check_eq "the old dev commit still gives the old image" "$ddev" "$dold"
dv1b=$(nm_manifest nix/hello v1 "$NM_WORK/m")
check_eq "v1 unchanged" "$dv1" "$dv1b"
check_eq "the new commit built once" $((b1 + 1)) "$(nm_builds)"

# Asks for an image at v1, latest and C1 at once: at_once NAME; the
# bodies and statuses land in $NM_WORK/at.TAG and at.TAG.st.
at_once()
{
	_pids=""
	for _t in v1 latest "$C1"; do
		curl -s -o "$NM_WORK/at.$_t" -w '%{http_code}' \
		    -H "$ACCEPT_DOCKER" "$NM_URL/v2/$1/manifests/$_t" \
		    >"$NM_WORK/at.$_t.st" &
		_pids="$_pids $!"
	done
	# shellcheck disable=SC2086
	wait $_pids
}

# Three tags of one commit asked at once: one image, one build.
b2=$(nm_builds)
at_once nix/figlet
for t in v1 latest "$C1"; do
	check_eq "figlet at $t, asked at once" 200 "$(cat "$NM_WORK/at.$t.st")"
	check_eq "figlet at $t is the same image" \
	    "$(nm_sha256 "$NM_WORK/at.v1")" "$(nm_sha256 "$NM_WORK/at.$t")"
done
check_eq "three tags of one commit at once built once" $((b2 + 1)) \
    "$(nm_builds)"
# The same for an image that cannot be built: one failure, for all three.
b3=$(nm_builds)
at_once nix/nope8
for t in v1 latest "$C1"; do
	check_eq "nope8 at $t, asked at once" 404 "$(cat "$NM_WORK/at.$t.st")"
	check_contains "nope8 at $t: the message names it" nope8 \
	    "$(cat "$NM_WORK/at.$t")"
done
check_eq "three tags of one commit at once failed once" $((b3 + 1)) \
    "$(nm_builds)"

nm_stop
