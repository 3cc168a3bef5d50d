# tests/e2e_bounds.sh: upstream work stays bounded (issue 8) against
# tests/upstream/bad_upstream.py: a token over 16 KiB is refused with a
# clear error, and thousands of repositories with large tokens leave the
# daemon's memory bounded (the token cache drops the least recently used).

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"
. "$NM_TOP/tests/upstream/lib_upstream.sh"

need curl jq

up_bad_start --size 65536
nm_start --upstream "docker.io=$UP_BAD_URL"

# The daemon's resident memory in KiB.
rss()
{
	awk '/^VmRSS:/ { print $2 }' "/proc/$NM_PID/status"
}

# A token of 20,000 bytes: refused, and the client is told why.
st=$(http_status "$NM_URL/v2/tok20000/big/manifests/latest" \
    -H "$ACCEPT_DOCKER")
nm_check_error "a 20,000-byte token" 502 "$st" UNKNOWN
check_contains "the error says the token is too long" "token over 16384" \
    "$(nm_error_message)"
check_eq "the refused token was not used" 0 \
    "$(grep -c 'GET /v2/tok20000/big/manifests/latest 404' "$UP_BAD_LOG" ||
    true)"

# A token of 16,000 bytes is taken: the upstream's 404 comes through.
st=$(http_status "$NM_URL/v2/tok16000/ok/manifests/latest" \
    -H "$ACCEPT_DOCKER")
nm_check_error "a 16,000-byte token" 404 "$st" MANIFEST_UNKNOWN

# 2,500 repositories, each with its own 15,000-byte token: 37 MB of
# tokens if all were kept.  One curl sends them all over one connection.
n=2500
i=0
: >"$NM_WORK/urls"
while [ "$i" -lt "$n" ]; do
	printf 'url = "%s/v2/tok15000/r%d/manifests/latest"\noutput = "/dev/null"\n' \
	    "$NM_URL" "$i" >>"$NM_WORK/urls"
	i=$((i + 1))
done
rss0=$(rss)
curl -s -K "$NM_WORK/urls" -H "$ACCEPT_DOCKER" -w '%{http_code}\n' \
    --max-time 600 >"$NM_WORK/codes" || true
check_eq "every one of the $n repositories answered 404" "$n" \
    "$(grep -c '^404$' "$NM_WORK/codes" || true)"
rss1=$(rss)
echo "# RSS before ${rss0} KiB, after ${rss1} KiB"
grow=$((rss1 - rss0))
# ASAN keeps freed memory in quarantine: RSS says nothing about the cache.
if ldd "$NM_BIN" 2>/dev/null | grep -q libasan; then
	echo "# memory not judged under ASAN (grew ${grow} KiB)"
elif [ "$grow" -lt 16384 ]; then
	ok "memory grew ${grow} KiB for $n large tokens (under 16 MiB)"
else
	bad "memory grew ${grow} KiB for $n large tokens (37 MB of tokens)"
fi
grep -q "upstream token cache full" "$NM_LOG" &&
    ok "the log says the token cache dropped old tokens" ||
    bad "the log never says the token cache is full"
# The newest tokens are still cached: asking again needs no new token.
t0=$(grep -c "GET /token?size=15000" "$UP_BAD_LOG" || true)
st=$(http_status "$NM_URL/v2/tok15000/r$((n - 1))/manifests/latest" \
    -H "$ACCEPT_DOCKER")
check_eq "the newest repository again" 404 "$st"
check_eq "the newest repository's token came from the cache" "$t0" \
    "$(grep -c "GET /token?size=15000" "$UP_BAD_LOG" || true)"
check_eq "the daemon still answers" 200 "$(http_status "$NM_URL/v2/")"
nm_stop
