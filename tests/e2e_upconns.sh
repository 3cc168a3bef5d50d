# tests/e2e_upconns.sh: upstream_max_connections.  With a cap of 2, eight
# concurrent manifest requests to an upstream that holds each answer for
# two seconds reach it at most two at a time, and every one of them gets
# its answer (the rest wait in line); with the default cap (16) more than
# two are in flight at once, so the count is a real measurement.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"
. "$NM_TOP/tests/upstream/lib_upstream.sh"

need curl jq

up_init
up_bad_start --size 300000 --hold 2

# Eight names at once: library/good (200) and seven the upstream does not
# know (404); each answer comes after two seconds.
pull_eight()
{
	_pids=
	for _n in good none1 none2 none3 none4 none5 none6 none7; do
		curl -s -o /dev/null -w '%{http_code}\n' \
		    -H "Accept: application/vnd.oci.image.manifest.v1+json" \
		    "$NM_URL/v2/library/$_n/manifests/latest" \
		    >"$NM_WORK/st.$_n" &
		_pids="$_pids $!"
	done
	for _p in $_pids; do
		wait "$_p"
	done
}

max_inflight()
{
	grep "INFLIGHT max=" "$UP_BAD_LOG" | tail -n 1 | sed 's/.*max=//'
}

nm_start --upstream "docker.io=$UP_BAD_URL" --upstream-max-connections 2
pull_eight
check_eq "library/good through the capped upstream" 200 \
    "$(cat "$NM_WORK/st.good")"
n404=$(cat "$NM_WORK"/st.none* | grep -c '^404$' || true)
check_eq "every waiting request got its answer" 7 "$n404"
check_eq "at most 2 requests were in flight upstream" 2 "$(max_inflight)"
check_eq "the log says requests wait" 1 \
    "$(grep -c "upstream docker.io: all 2 connections busy" "$NM_LOG" ||
    true)"
check_eq "the upstream saw each request once" 1 \
    "$(up_bad_count GET /v2/library/none5/manifests/latest)"
nm_stop

# The default cap lets all eight go at once (the upstream logs its count
# only as it grows past 2).
: >"$UP_BAD_LOG"
nm_start --upstream "docker.io=$UP_BAD_URL"
pull_eight
n=$(max_inflight)
if [ "${n:-0}" -gt 2 ]; then
	ok "under the default cap $n were in flight at once"
else
	bad "under the default cap only ${n:-0} were in flight at once"
fi
n404=$(cat "$NM_WORK"/st.none* | grep -c '^404$' || true)
check_eq "and answered" 7 "$n404"
nm_stop
