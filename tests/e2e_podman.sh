# tests/e2e_podman.sh: real podman with the README's registries.conf.  It
# pulls a docker.io image through the mirror and runs it, and pulls and
# runs a Nix image by the mirror's name.
#
# podman keeps everything under the work dir: --root and --runroot there,
# vfs storage, and the README's snippet as the only registries.conf.
# Two things are for this machine only, not for users:
# - "podman run" gets --ulimit nofile=1024:1024 --ulimit nproc=1024:1024,
#   because runc cannot raise the rlimits podman asks for by default inside
#   this sandbox;
# - containers run with --network none (there is no network to give).

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"
. "$NM_TOP/tests/upstream/lib_upstream.sh"

need podman curl jq awk
[ "$(id -u)" = 0 ] || skip "podman needs root here"

up_start
up_selftest
nm_start --upstream "docker.io=$UP_REG_URL"

# The README's registries.conf drop-in, with the mirror's address.
PD=$NM_WORK/podman
mkdir -p "$PD"
nm_readme_block toml 'registry\\.mirror' >"$PD/registries.conf"
grep -q "location = \"$NM_ADDR\"" "$PD/registries.conf" ||
    fail "no registries.conf snippet in the README"
export CONTAINERS_REGISTRIES_CONF="$PD/registries.conf"
PODMAN="podman --root $PD/root --runroot $PD/run --storage-driver vfs
    --cgroup-manager cgroupfs --events-backend file --tmpdir $PD/tmp
    --runtime runc"

# Runs podman, failing with its output: pd ARGS...
pd()
{
	$PODMAN "$@" >"$NM_WORK/pd.out" 2>"$NM_WORK/pd.err" </dev/null ||
	    fail "podman $*: $(cat "$NM_WORK/pd.out" "$NM_WORK/pd.err")"
}

# Runs a container and prints its output: pd_run IMAGE [CMD...]
pd_run()
{
	$PODMAN run --rm --network none --ulimit nofile=1024:1024 \
	    --ulimit nproc=1024:1024 "$@" >"$NM_WORK/run.out" \
	    2>"$NM_WORK/run.err" </dev/null ||
	    fail "podman run $*: $(cat "$NM_WORK/run.out" "$NM_WORK/run.err")"
	cat "$NM_WORK/run.out"
}

# docker.io through the mirror: the registries.conf mirror entry sends it
# here (there is no way out to registry-1.docker.io).
pd pull docker.io/library/busyimg:latest
check_eq "podman pulled busyimg with the upstream's digest" "$UP_BUSY_DG" \
    "$($PODMAN image inspect --format '{{.Digest}}' docker.io/library/busyimg:latest)"
check_eq "the mirror fetched the layer upstream once" 1 \
    "$(up_reg_count GET "/v2/library/busyimg/blobs/$UP_BUSY_LAYER")"
out=$(pd_run docker.io/library/busyimg:latest)
check_eq "podman run busyimg prints its Cmd's line" "$UP_BUSY_LINE" "$out"

# A Nix image by the mirror's name (an insecure registry in the snippet).
NIXI=$NM_ADDR/nix/shell/figlet:latest
pd pull "$NIXI"
dg=$($PODMAN image inspect --format '{{.Digest}}' "$NIXI")
st=$(http_status "$NM_URL/v2/nix/shell/figlet/manifests/$dg" -H "$ACCEPT_OCI")
check_eq "the mirror serves the manifest podman recorded ($dg)" 200 "$st"
check_eq "and its bytes hash to that digest" "$dg" "$(nm_sha256 "$NM_BODY")"
out=$(pd_run "$NIXI" sh -c 'command -v figlet >/dev/null && echo found')
check_eq "podman runs the Nix image's shell, with figlet on PATH" found "$out"

# With the upstream gone, podman pulls busyimg again from the mirror alone.
pd rmi docker.io/library/busyimg:latest
up_registry_stop
pd pull docker.io/library/busyimg:latest
check_eq "with the upstream stopped, podman pulls the same digest" \
    "$UP_BUSY_DG" \
    "$($PODMAN image inspect --format '{{.Digest}}' docker.io/library/busyimg:latest)"
nm_stop
