# tests/e2e_docker.sh: a real Docker daemon (Debian's docker.io) pointed
# at the mirror with the README's daemon.json.  It pulls a docker.io image
# through registry-mirrors and runs it, pulls and runs a Nix image by the
# mirror's name, and pulls the docker.io image again with the upstream
# stopped.
#
# dockerd runs with its own data root, exec root and socket under the work
# dir, so it leaves the host's Docker (if any) alone.  This machine has no
# network to give containers: the daemon gets "iptables": false and
# "bridge": "none", and containers run with --network none.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"
. "$NM_TOP/tests/upstream/lib_upstream.sh"

need dockerd docker curl jq awk
[ "$(id -u)" = 0 ] || skip "dockerd needs root here"

up_start
up_selftest
nm_start --upstream "docker.io=$UP_REG_URL"

# The README's second daemon.json (the mirror, and the mirror as an
# insecure registry for Nix images), with the mirror's address in it.
DK=$NM_WORK/docker
mkdir -p "$DK"
nm_readme_block json insecure-registries >"$DK/readme.json"
jq -e '."registry-mirrors" and ."insecure-registries"' "$DK/readme.json" \
    >/dev/null || fail "the README's daemon.json: $(cat "$DK/readme.json")"
jq '. + {"iptables": false, "bridge": "none"}' "$DK/readme.json" \
    >"$DK/daemon.json" || fail "daemon.json"
check_eq "daemon.json names the mirror" "http://$NM_ADDR" \
    "$(jq -r '."registry-mirrors"[0]' "$DK/daemon.json")"

NM_LOGS="$NM_LOGS $DK/dockerd.log"
dockerd --config-file "$DK/daemon.json" --data-root "$DK/root" \
    --exec-root "$DK/exec" --pidfile "$DK/dockerd.pid" \
    -H "unix://$DK/docker.sock" >"$DK/dockerd.log" 2>&1 </dev/null &
DK_PID=$!
nm_track "$DK_PID"
export DOCKER_HOST="unix://$DK/docker.sock"
i=0
until docker version >/dev/null 2>&1; do
	nm_alive "$DK_PID" || fail "dockerd exited at start"
	[ "$i" -lt 600 ] || fail "dockerd does not answer in 60 s"
	sleep 0.1
	i=$((i + 1))
done
check_contains "dockerd lists the mirror" "http://$NM_ADDR/" \
    "$(docker info --format '{{json .RegistryConfig.Mirrors}}')"

# Runs docker, failing with its output: dk ARGS...  Output in $NM_WORK/dk.out.
dk()
{
	docker "$@" >"$NM_WORK/dk.out" 2>&1 </dev/null ||
	    fail "docker $*: $(cat "$NM_WORK/dk.out")"
}

# Runs a container and prints its output; fails with docker's messages:
# dk_run IMAGE [CMD...]
dk_run()
{
	docker run --rm --network none "$@" >"$NM_WORK/run.out" \
	    2>"$NM_WORK/run.err" </dev/null ||
	    fail "docker run $*: $(cat "$NM_WORK/run.out" "$NM_WORK/run.err")"
	cat "$NM_WORK/run.out"
}

# A docker.io image through registry-mirrors: Docker asks for
# library/busyimg, the mirror fetches it from the (test) upstream.
dk pull busyimg
check_eq "docker pulled busyimg with the upstream's digest" \
    "busyimg@$UP_BUSY_DG" \
    "$(docker image inspect --format '{{index .RepoDigests 0}}' busyimg)"
check_eq "the mirror fetched the layer upstream once" 1 \
    "$(up_reg_count GET "/v2/library/busyimg/blobs/$UP_BUSY_LAYER")"
out=$(dk_run busyimg)
check_eq "docker run busyimg prints its Cmd's line" "$UP_BUSY_LINE" "$out"
out=$(dk_run busyimg /bin/sh -c 'echo sh-ok')
check_eq "a shell runs in it" sh-ok "$out"

# A Nix image by the mirror's own name (an insecure registry to Docker).
NIXI=$NM_ADDR/nix/shell/hello:latest
dk pull "$NIXI"
dg=$(docker image inspect --format '{{index .RepoDigests 0}}' "$NIXI")
dg=${dg#"$NM_ADDR/nix/shell/hello@"}
st=$(http_status "$NM_URL/v2/nix/shell/hello/manifests/$dg" \
    -H "$ACCEPT_DOCKER")
check_eq "the mirror serves the manifest docker recorded ($dg)" 200 "$st"
check_eq "and its bytes hash to that digest" "$dg" "$(nm_sha256 "$NM_BODY")"
out=$(dk_run "$NIXI" hello)
check_eq "docker runs hello from the Nix image" "hello from nixmirror" "$out"
out=$(dk_run "$NIXI" sh -c 'echo $((6 * 7))')
check_eq "the Nix image's shell runs" 42 "$out"
out=$(dk_run "$NM_ADDR/nix/hello")
check_eq "nix/hello runs its mainProgram as Cmd" "hello from nixmirror" "$out"

# The upstream goes away: Docker pulls busyimg again, from the mirror alone.
dk rmi busyimg
up_registry_stop
curl -s --max-time 2 "$UP_REG_URL/v2/" >/dev/null 2>&1 &&
    fail "the upstream still answers"
dk pull busyimg
check_eq "with the upstream stopped, docker pulls the same digest" \
    "busyimg@$UP_BUSY_DG" \
    "$(docker image inspect --format '{{index .RepoDigests 0}}' busyimg)"
out=$(dk_run busyimg)
check_eq "and runs it" "$UP_BUSY_LINE" "$out"

# Stop dockerd (its containerd and shims go with it).
kill -TERM "$DK_PID"
nm_kill_wait "$DK_PID" TERM 300 || nm_kill_wait "$DK_PID" KILL 20
wait "$DK_PID" 2>/dev/null || true
nm_untrack "$DK_PID"
nm_stop
