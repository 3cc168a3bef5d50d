# tests/e2e_corrupt.sh: an upstream that lies (tests/upstream/bad_upstream.py)
# never gets bad bytes into nixmirror's store: a layer with wrong bytes of
# the right length, a layer cut in half, a manifest that is not its digest.
# Clients' transfers fail, nothing is stored, the daemon keeps serving.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"
. "$NM_TOP/tests/upstream/lib_upstream.sh"

need curl jq
[ -x "$UP_PY" ] || skip "$UP_PY not installed"

# 4 MiB layers sent in 64 KiB chunks 20 ms apart: about 1.3 s each, so
# clients overlap and streaming can be seen.
up_bad_start --chunk-delay 0.02
nm_start --upstream "docker.io=$UP_BAD_URL"
DATA=$NM_DATA

# GETs a blob with curl: prints "<curl exit> <status> <bytes> <sha256>
# <time to first byte> <total time>".  get_blob NAME DIGEST OUT
get_blob()
{
	_rc=0
	_out=$3
	rm -f "$_out"
	_w=$(curl -s -o "$_out" \
	    -w '%{http_code} %{time_starttransfer} %{time_total}' \
	    --max-time 60 "$NM_URL/v2/$1/blobs/$2" 2>/dev/null) || _rc=$?
	[ -f "$_out" ] || : >"$_out"
	# shellcheck disable=SC2086
	set -- $_w
	echo "$_rc ${1:-000} $(nm_size "$_out") $(nm_sha256 "$_out") ${2:-0} ${3:-0}"
}

# Checks a client's transfer of a corrupt blob failed the right way: a 200
# whose body is cut short (curl reports an error), or a 5xx before any
# body.  A complete 200 means bad bytes reached the client; a 404 is not
# what an upstream that has the blob deserves.  check_failed WHAT RESULT
check_failed()
{
	# shellcheck disable=SC2086
	set -- "$1" $2
	_what=$1 _rc=$2 _st=$3 _sz=$4
	case $_rc:$_st in
	0:200)
		bad "$_what: the client got a complete 200 ($_sz bytes, $5)" ;;
	*:200)
		ok "$_what: the transfer failed (curl exit $_rc after $_sz bytes)" ;;
	*:5[0-9][0-9])
		ok "$_what: refused with $_st" ;;
	*)
		bad "$_what: curl exit $_rc, status $_st (expected a cut 200 or a 5xx)" ;;
	esac
}

# Waits (5 s at most) until the data dir's tmp has no file left.
check_tmp_empty()
{
	_i=0
	while [ -n "$(find "$DATA/tmp" -type f 2>/dev/null | head -n 1)" ] &&
	    [ "$_i" -lt 50 ]; do
		sleep 0.1
		_i=$((_i + 1))
	done
	check_eq "$1: no temp file left" "" \
	    "$(find "$DATA/tmp" -type f 2>/dev/null | head -n 3)"
}

for r in good wrong trunc badman; do
	st=$(http_status "$NM_URL/v2/library/$r/manifests/latest" -H "$ACCEPT_OCI")
	[ "$r" = badman ] && continue
	check_eq "library/$r:latest status" 200 "$st"
	check_eq "library/$r:latest digest" "$(up_bad_info "library/$r" manifest)" \
	    "$(nm_sha256 "$NM_BODY")"
done

# The control: the good layer arrives whole, streamed (the first byte long
# before the upstream has sent the last one), and is stored.
GOOD=$(up_bad_info library/good layer)
GSIZE=$(up_bad_info library/good layer_size)
res=$(get_blob library/good "$GOOD" "$NM_WORK/good")
set -- $res
check_eq "good layer: curl exit" 0 "$1"
check_eq "good layer: status" 200 "$2"
check_eq "good layer: size" "$GSIZE" "$3"
check_eq "good layer: digest" "$GOOD" "$4"
if awk -v f="$5" -v t="$6" 'BEGIN { exit !(t > 0.8 && f < t / 2) }'; then
	ok "good layer streamed (first byte at $5 s of $6 s)"
else
	bad "good layer not streamed: first byte at $5 s of $6 s"
fi
hex=${GOOD#sha256:}
# The last byte waits for the digest check, not for the commit (fsync,
# rename), which a loaded machine may finish a moment after the client.
GFILE=$DATA/blobs/sha256/$(echo "$hex" | cut -c1-2)/$hex
nm_until '[ -f "$GFILE" ]' 100 &&
    ok "good layer stored" || bad "good layer not stored"

# Wrong bytes of the right length, then a body cut in half: the client
# fails, nothing is stored, and a later request does not get bad bytes
# from the store either.
for r in wrong trunc; do
	dg=$(up_bad_info "library/$r" layer)
	res=$(get_blob "library/$r" "$dg" "$NM_WORK/$r")
	check_failed "$r layer, first client" "$res"
	up_check_not_stored "$r layer" "$DATA" "$dg"
	n1=$(up_bad_count GET "/v2/library/$r/blobs/$dg")
	res=$(get_blob "library/$r" "$dg" "$NM_WORK/$r")
	check_failed "$r layer, a later client" "$res"
	n2=$(up_bad_count GET "/v2/library/$r/blobs/$dg")
	[ "$n2" -gt "$n1" ] &&
	    ok "$r layer: a later client makes a new upstream fetch" ||
	    bad "$r layer: a later client was served without upstream ($n1 -> $n2)"
	up_check_not_stored "$r layer, later" "$DATA" "$dg"
	check_tmp_empty "$r layer"
done

# Concurrent clients on each corrupt layer: all fail.
for r in wrong trunc; do
	dg=$(up_bad_info "library/$r" layer)
	n0=$(up_bad_count GET "/v2/library/$r/blobs/$dg")
	i=1
	pids=""
	while [ "$i" -le 8 ]; do
		get_blob "library/$r" "$dg" "$NM_WORK/$r.$i" >"$NM_WORK/$r.$i.res" &
		pids="$pids $!"
		i=$((i + 1))
	done
	for p in $pids; do
		wait "$p" || true
	done
	i=1
	while [ "$i" -le 8 ]; do
		check_failed "$r layer, concurrent client $i" \
		    "$(cat "$NM_WORK/$r.$i.res")"
		i=$((i + 1))
	done
	n1=$(up_bad_count GET "/v2/library/$r/blobs/$dg")
	check_eq "$r layer: upstream fetches for 8 concurrent clients" 1 \
	    $((n1 - n0))
	up_check_not_stored "$r layer, concurrent" "$DATA" "$dg"
	check_tmp_empty "$r layer, concurrent"
done

# A manifest by digest whose upstream bytes are not that digest.
mdg=$(up_bad_info library/badman manifest)
st=$(http_status "$NM_URL/v2/library/badman/manifests/$mdg" -H "$ACCEPT_OCI")
if [ "$st" = 200 ]; then
	check_eq "badman manifest by digest: served bytes are the digest" \
	    "$mdg" "$(nm_sha256 "$NM_BODY")"
else
	ok "badman manifest by digest refused ($st)"
fi
up_check_not_stored "badman manifest" "$DATA" \
    "$(up_bad_info library/badman served_manifest)"

# The daemon still serves, also what it stored.
nm_alive "$NM_PID" && ok "daemon still runs" || fail "daemon died"
st=$(http_status "$NM_URL/v2/")
check_eq "/v2/ still answers" 200 "$st"
n=$(up_bad_count GET "/v2/library/good/blobs/$GOOD")
res=$(get_blob library/good "$GOOD" "$NM_WORK/good")
set -- $res
check_eq "good layer again: status" 200 "$2"
check_eq "good layer again: digest" "$GOOD" "$4"
check_eq "good layer again: from the store" "$n" \
    "$(up_bad_count GET "/v2/library/good/blobs/$GOOD")"
nm_stop
