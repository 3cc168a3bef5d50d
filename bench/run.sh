#!/usr/bin/env bash
# bench/run.sh: nixmirror side by side with CNCF distribution (Debian's
# docker-registry in proxy mode), both in front of one token-auth upstream
# (docker-registry + tests/upstream/token_issuer.py) that holds an image
# with a 64 MiB incompressible layer.  Prints one table:
#
#   figure | distribution | nixmirror | ratio | limit | verdict
#
# and a second, of where the CPU went: for the cold and warm blob rows,
# the CPU seconds of the proxy and of all cores while the row ran (the
# clients, upstream and token issuer take the rest), how busy the cores
# were, and one client's time to the first byte.
#
# Each figure is the median of RUNS runs (-n, default 3); every cold run
# starts both proxies on fresh data dirs.  Not part of make check.
#
#   bench/run.sh [-n RUNS] [-o TABLE-FILE] [-s | -t]   (or: make bench)
#
# -s measures the shared-bucket rows instead, on a one-machine Ceph RGW
# (tests/lib_ceph.sh): distribution with its S3 driver against a
# nixmirror replica whose local disk is cold but whose bucket holds the
# blob, one client, then 8 clients x 4; then both redirecting blob GETs
# to the bucket (distribution's redirect, --s3-redirect), 8 clients x 4.
#
# -t measures the cold rows instead with the upstream serving TLS (as
# every public registry does), both proxies trusting its test CA.
#
# Needs what ./bootstrap installs (wrk and pigz among it).  NM_BUILD
# names the build dir holding the nixmirror binary (default: the source
# dir).
set -eu

RUNS=3
TABLE_OUT=""
S3_ONLY=0
TLS_ONLY=0
while getopts n:o:sth opt; do
	case $opt in
	n) RUNS=$OPTARG ;;
	o) TABLE_OUT=$OPTARG ;;
	s) S3_ONLY=1 ;;
	t) TLS_ONLY=1 ;;
	*) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
	esac
done
case $RUNS in
''|*[!0-9]*|0) echo "bench: -n wants a positive number" >&2; exit 2 ;;
esac

NM_TOP=$(cd "$(dirname "$0")/.." && pwd)
: "${NM_BUILD:=$NM_TOP}"
export NM_TOP NM_BUILD
for c in wrk pigz; do
	command -v "$c" >/dev/null 2>&1 ||
	    { echo "bench: $c is missing: run ./bootstrap" >&2; exit 2; }
done
[ -x "$NM_BUILD/nixmirror" ] ||
    { echo "bench: no $NM_BUILD/nixmirror: run ./bootstrap first" >&2; exit 2; }

# The tests' helpers: work dir, trap, the upstream with token auth.
NM_TEST=bench
# shellcheck source=../tests/lib.sh
. "$NM_TOP/tests/lib.sh"
# shellcheck source=../tests/upstream/lib_upstream.sh
. "$NM_TOP/tests/upstream/lib_upstream.sh"
UP_BIG_SIZE=$((64 * 1024 * 1024))
export NIX_CONFIG='sandbox = false' NIXMIRROR_OFFLINE=1

SHM=$(mktemp -d /dev/shm/nm-bench.XXXXXX)
bench_cleanup()
{
	rm -rf "$SHM"
}
trap 'bench_cleanup; nm_cleanup' EXIT

say()
{
	echo "bench: $*" >&2
}

# Seconds since the epoch, with nanoseconds.
now()
{
	date +%s.%N
}

# The difference of two times, in seconds.
elapsed()
{
	awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'
}

# The median of numbers given as arguments.
median()
{
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
	    END { if (NR % 2) print v[(NR + 1) / 2];
		  else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# Checks a fetched file has the digest: check_blob FILE DIGEST WHAT.
check_blob()
{
	[ "$(nm_sha256 "$1")" = "$2" ] || fail "$3: wrong bytes in $1"
	rm -f "$1"
}

# --- the proxies --------------------------------------------------------

DIST_N=0
# Starts distribution in proxy mode on a fresh data dir, or with "s3" on
# its S3 driver and the RGW bucket bench-dist (and with "s3 redirect",
# answering blob GETs with redirects to it); sets DIST_PID, DIST_URL.
dist_start()
{
	DIST_N=$((DIST_N + 1))
	_d=$NM_WORK/dist$DIST_N
	mkdir -p "$_d/data"
	_redirect=true
	DIST_PORT=$(nm_free_port)
	DIST_URL=http://127.0.0.1:$DIST_PORT
	if [ "${1:-}" = s3 ]; then
		_storage="  s3:
    accesskey: $S3_ACCESS
    secretkey: $S3_SECRET
    region: us-east-1
    regionendpoint: $S3_URL
    bucket: bench-dist
    secure: false
    v4auth: true"
		[ "${2:-}" = redirect ] && _redirect=false
	else
		_storage="  filesystem:
    rootdirectory: $_d/data"
	fi
	cat >"$_d/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
$_storage
  delete:
    enabled: true
  redirect:
    disable: $_redirect
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$DIST_PORT
  secret: nixmirror-bench
proxy:
  remoteurl: $UP_REG_URL
  username: $UP_USER
  password: $UP_PASS
EOF
	# Its AWS SDK cannot take AWS_CA_BUNDLE (which curl-minded hosts set).
	env -u AWS_CA_BUNDLE docker-registry serve "$_d/config.yml" \
	    >>"$_d/log" 2>&1 </dev/null &
	DIST_PID=$!
	nm_track "$DIST_PID"
	NM_LOGS="$NM_LOGS $_d/log"
	_i=0
	until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
	    "$DIST_URL/v2/" 2>/dev/null)" = 200 ]; do
		nm_alive "$DIST_PID" || fail "distribution exited at start"
		[ "$_i" -lt 200 ] || fail "distribution does not start in 20 s"
		sleep 0.1
		_i=$((_i + 1))
	done
}

dist_stop()
{
	nm_kill_wait "$DIST_PID" TERM 50 || nm_kill_wait "$DIST_PID" KILL 20
	wait "$DIST_PID" 2>/dev/null || true
	nm_untrack "$DIST_PID"
	rm -rf "$NM_WORK/dist$DIST_N/data"
}

# Starts nixmirror on a fresh data dir, docker.io going to the upstream.
mirror_start()
{
	nm_start --upstream "docker.io=$UP_REG_URL" "$@"
}

mirror_stop()
{
	kill -TERM "$NM_PID" 2>/dev/null || true
	nm_kill_wait "$NM_PID" TERM 200 || nm_kill_wait "$NM_PID" KILL 20
	wait "$NM_PID" 2>/dev/null || true
	nm_untrack "$NM_PID"
	rm -rf "$NM_DATA"
}

# VmRSS and VmHWM of a process, in MiB: "RSS HWM".
rss_of()
{
	awk '/^VmRSS:/ { r = $2 } /^VmHWM:/ { h = $2 }
	    END { printf "%.1f %.1f\n", r / 1024, h / 1024 }' "/proc/$1/status"
}

# The registry's access-log lines so far (any client).
reg_lines()
{
	wc -l <"$UP_REG_LOG" | tr -d ' '
}

# Blob GETs of the big layer the registry answered after line MARK, not
# counting the bench's own direct fetches.
reg_blob_gets_since()
{
	tail -n +"$(($1 + 1))" "$UP_REG_LOG" | grep -F "GET /v2/library/bigimg/blobs/$UP_BIG_LAYER" |
	    grep -vF "\"$UP_PROBE_UA\"" | grep -cE '" 2[0-9][0-9] ' || true
}

BLOB=/v2/library/bigimg/blobs
CLK_TCK=$(getconf CLK_TCK)

# CPU ticks a process has used (user and system).
cpu_ticks()
{
	awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# CPU ticks all cores have been busy (not idle, not waiting for disk).
busy_ticks()
{
	awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat
}

# Where the CPU of one figure went: cpu_start PID before it, then
# cpu_end NAME PID appends "PROXY-SECONDS MACHINE-SECONDS BUSY%" to the
# file cpu.NAME (the figures run in subshells).
cpu_start()
{
	_cp0=$(cpu_ticks "$1")
	_cm0=$(busy_ticks)
	_cw0=$(now)
}
cpu_end()
{
	_cp1=$(cpu_ticks "$2")
	_cm1=$(busy_ticks)
	_cw1=$(now)
	awk -v p="$((_cp1 - _cp0))" -v m="$((_cm1 - _cm0))" -v hz="$CLK_TCK" \
	    -v w="$(elapsed "$_cw0" "$_cw1")" -v n="$(nproc)" \
	    'BEGIN { printf "%.2f %.2f %.0f\n", p / hz, m / hz,
		100 * m / hz / w / n }' >>"$NM_WORK/cpu.$1"
}

# Seconds as milliseconds.
ms()
{
	awk -v s="$1" 'BEGIN { printf "%.1f ms", 1000 * s }'
}

# The medians of a cpu.NAME file: "PROXY-SECONDS MACHINE-SECONDS BUSY%".
cpu_median()
{
	for _f in 1 2 3; do
		# shellcheck disable=SC2046
		median $(cut -d' ' -f"$_f" "$NM_WORK/cpu.$1")
	done | tr '\n' ' '
}

# --- the figures ----------------------------------------------------------

# One client fetches the big blob, cold: prints the seconds.  With NAME
# and the proxy's PID, notes the CPU it took in cpu.NAME.
cold1()
{
	[ -z "${3:-}" ] || cpu_start "$3"
	_t0=$(now)
	curl -sf -o "$SHM/c1" --max-time 300 -w '%{time_starttransfer}\n' \
	    "$1$BLOB/$UP_BIG_LAYER" >"$SHM/c1.ttfb" ||
	    fail "cold fetch from $1 failed"
	_t1=$(now)
	[ -z "${3:-}" ] || { cpu_end "$2" "$3"; cat "$SHM/c1.ttfb" >>"$NM_WORK/ttfb.$2"; }
	check_blob "$SHM/c1" "$UP_BIG_LAYER" "cold blob from $1"
	elapsed "$_t0" "$_t1"
}

# The upstream directly, with a token fetched beforehand.  With NAME,
# notes the CPU the upstream took in cpu.NAME.
direct1()
{
	_tok=$(up_token library/bigimg)
	[ -z "${1:-}" ] || cpu_start "$UP_REG_PID"
	_t0=$(now)
	# shellcheck disable=SC2046
	curl -sf -o "$SHM/d1" --max-time 300 -A "$UP_PROBE_UA" $(up_curl_tls) \
	    -w '%{time_starttransfer}\n' -H "Authorization: Bearer $_tok" \
	    "$UP_REG_URL$BLOB/$UP_BIG_LAYER" >"$SHM/d1.ttfb" ||
	    fail "direct fetch failed"
	_t1=$(now)
	[ -z "${1:-}" ] || { cpu_end "$1" "$UP_REG_PID"; cat "$SHM/d1.ttfb" >>"$NM_WORK/ttfb.$1"; }
	check_blob "$SHM/d1" "$UP_BIG_LAYER" "direct blob"
	elapsed "$_t0" "$_t1"
}

# Twelve clients at once, cold: prints "SECONDS UPSTREAM-GETS".  With
# NAME and the proxy's PID, notes the CPU it took in cpu.NAME.
cold12()
{
	_mark=$(reg_lines)
	[ -z "${3:-}" ] || cpu_start "$3"
	_t0=$(now)
	_pids=""
	for _i in 1 2 3 4 5 6 7 8 9 10 11 12; do
		curl -sf -o "$SHM/c12.$_i" --max-time 300 \
		    "$1$BLOB/$UP_BIG_LAYER" &
		_pids="$_pids $!"
	done
	_bad=0
	for _p in $_pids; do
		wait "$_p" || _bad=$((_bad + 1))
	done
	_t1=$(now)
	[ -z "${3:-}" ] || cpu_end "$2" "$3"
	[ "$_bad" = 0 ] || fail "$_bad of 12 cold fetches from $1 failed"
	for _i in 1 2 3 4 5 6 7 8 9 10 11 12; do
		check_blob "$SHM/c12.$_i" "$UP_BIG_LAYER" "cold12 from $1"
	done
	# The registry writes its access log line when a response ends.
	sleep 0.5
	echo "$(elapsed "$_t0" "$_t1") $(reg_blob_gets_since "$_mark")"
}

# Eight clients fetch the cached blob four times each: prints MiB/s.
# WARM_CURL may add curl options (-L to follow redirects).  With NAME
# and the proxy's PID, notes the CPU it took in cpu.NAME.
warm()
{
	# shellcheck disable=SC2086
	curl -sf ${WARM_CURL:-} -o /dev/null "$1$BLOB/$UP_BIG_LAYER" ||
	    fail "warm-up of $1"
	[ -z "${3:-}" ] || cpu_start "$3"
	_t0=$(now)
	_pids=""
	for _i in 1 2 3 4 5 6 7 8; do
		(for _j in 1 2 3 4; do
			# shellcheck disable=SC2086
			curl -sf ${WARM_CURL:-} -o /dev/null --max-time 300 \
			    "$1$BLOB/$UP_BIG_LAYER" || exit 1
		done) &
		_pids="$_pids $!"
	done
	for _p in $_pids; do
		wait "$_p" || fail "a warm fetch from $1 failed"
	done
	_t1=$(now)
	[ -z "${3:-}" ] || cpu_end "$2" "$3"
	awk -v s="$(elapsed "$_t0" "$_t1")" -v b="$UP_BIG_SIZE" \
	    'BEGIN { printf "%.0f", 32 * b / 1048576 / s }'
}

# wrk -c32 on the manifest by digest: prints "P50-MS P99-MS".
manifest_lat()
{
	_u="$1/v2/library/bigimg/manifests/$UP_BIG_DG"
	curl -sf -o /dev/null -H "$ACCEPT_DOCKER" "$_u" ||
	    fail "manifest by digest from $1"
	cat >"$NM_WORK/accept.lua" <<EOF
wrk.headers["Accept"] = "$MT_OCI, $MT_DOCKER, $MT_OINDEX, $MT_DLIST"
EOF
	wrk -t2 -c32 -d5s --latency -s "$NM_WORK/accept.lua" "$_u" \
	    >"$NM_WORK/wrk.out" 2>&1 || fail "wrk against $1"
	grep -q 'Non-2xx' "$NM_WORK/wrk.out" &&
	    fail "wrk against $1: non-2xx answers: $(cat "$NM_WORK/wrk.out")"
	awk '
	    function ms(v) {
		if (v ~ /us$/) return v / 1000
		if (v ~ /ms$/) return v + 0
		if (v ~ /s$/) return v * 1000
		return v
	    }
	    $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
	    END { printf "%.2f %.2f\n", p50, p99 }' "$NM_WORK/wrk.out"
}

# --- the Nix image ----------------------------------------------------------

BIG_PKGS=$NM_TOP/bench/pkgs
NIX_IMAGE=nix/big1/big2/big3/big4/big5

# Builds the big-closure package set once; sets BIG_PATHS (the closure).
big_build()
{
	_out=$(nix-build "$BIG_PKGS" --no-out-link 2>"$NM_WORK/nix-build.log") ||
	    fail "nix-build bench/pkgs: $(tail -n 5 "$NM_WORK/nix-build.log")"
	# shellcheck disable=SC2086
	BIG_PATHS=$(nix-store -qR $_out | sort)
	BIG_BYTES=$(du -scb $BIG_PATHS | tail -n 1 | cut -f1)
}

# tar | pigz -6 of the closure: prints seconds.
tar_pigz()
{
	_t0=$(now)
	# shellcheck disable=SC2086
	tar -cf - $BIG_PATHS 2>/dev/null | pigz -6 >/dev/null
	_t1=$(now)
	elapsed "$_t0" "$_t1"
}

# The Nix image, cold, through a fresh nixmirror: prints "SECONDS LAYERS".
nix_image()
{
	mirror_start --pkgs-path "$BIG_PKGS" --max-layers 5
	_t0=$(now)
	_st=$(curl -s -o "$NM_WORK/nix.manifest" -w '%{http_code}' \
	    --max-time 900 -H "$ACCEPT_OCI" "$NM_URL/v2/$NIX_IMAGE/manifests/latest")
	_t1=$(now)
	[ "$_st" = 200 ] ||
	    fail "Nix image: status $_st: $(head -c 300 "$NM_WORK/nix.manifest")"
	_nl=$(jq '.layers | length' "$NM_WORK/nix.manifest")
	mirror_stop
	echo "$(elapsed "$_t0" "$_t1") $_nl"
}

# --- the shared bucket (-s) ---------------------------------------------------

# A nixmirror replica on the bucket bench-nm, with a fresh local disk.
mirror_start_s3()
{
	AWS_ACCESS_KEY_ID=$S3_ACCESS AWS_SECRET_ACCESS_KEY=$S3_SECRET \
	    mirror_start --s3-endpoint "$S3_URL" --s3-bucket bench-nm "$@"
}

bench_s3()
{
	# shellcheck source=../tests/lib_ceph.sh
	. "$NM_TOP/tests/lib_ceph.sh"
	say "Ceph: one monitor, one memstore OSD, radosgw"
	ceph_start
	for b in bench-dist bench-nm; do
		[ "$(s3 PUT "/$b" -o /dev/null -w '%{http_code}')" = 200 ] ||
		    fail "cannot create bucket $b"
	done
	say "filling both buckets: one cold fetch each"
	dist_start s3
	cold1 "$DIST_URL" >/dev/null
	mirror_start_s3
	cold1 "$NM_URL" >/dev/null
	s3_flushed "$NM_URL"
	mirror_stop
	S_D1="" S_N1="" S_DW="" S_NW="" S_DIRECT=""
	for r in $(seq 1 "$RUNS"); do
		say "run $r of $RUNS: one client, from the bucket"
		S_D1="$S_D1 $(cold1 "$DIST_URL")"
		mirror_start_s3
		S_N1="$S_N1 $(cold1 "$NM_URL")"
		say "run $r of $RUNS: 8 clients x 4"
		S_NW="$S_NW $(warm "$NM_URL")"
		mirror_stop
		S_DW="$S_DW $(warm "$DIST_URL")"
		_t0=$(now)
		s3 GET "/bench-nm/blobs/sha256/${UP_BIG_LAYER#sha256:}" \
		    -o "$SHM/s3direct" || fail "direct GET from the bucket"
		_t1=$(now)
		check_blob "$SHM/s3direct" "$UP_BIG_LAYER" "the bucket directly"
		S_DIRECT="$S_DIRECT $(elapsed "$_t0" "$_t1")"
	done
	dist_stop
	# Both redirecting blob GETs to the bucket: the clients follow.
	dist_start s3 redirect
	mirror_start_s3 --s3-redirect
	S_DR="" S_NR=""
	for r in $(seq 1 "$RUNS"); do
		say "run $r of $RUNS: 8 clients x 4, redirected to the bucket"
		S_DR="$S_DR $(WARM_CURL=-L warm "$DIST_URL")"
		S_NR="$S_NR $(WARM_CURL=-L warm "$NM_URL")"
	done
	mirror_stop
	dist_stop
	# shellcheck disable=SC2086
	{
		m_sd1=$(median $S_D1) m_sn1=$(median $S_N1)
		m_sdw=$(median $S_DW) m_snw=$(median $S_NW)
		m_sdr=$(median $S_DR) m_snr=$(median $S_NR)
		m_sx=$(median $S_DIRECT)
	}
	{
		echo "nixmirror bench, shared bucket (Ceph RGW $(radosgw --version 2>/dev/null | awk '{print $3}')): median of $RUNS runs, $(nproc) cores, $(date -u +%Y-%m-%d)"
		echo
		echo "| figure | distribution (S3 driver) | nixmirror replica | ratio |"
		echo "|---|---|---|---|"
		echo "| 64 MiB blob in the bucket, 1 client, local disk cold (the bucket directly: ${m_sx} s) | ${m_sd1} s | ${m_sn1} s | $(awk -v a="$m_sn1" -v b="$m_sd1" 'BEGIN { printf "%.2f", a / b }') |"
		echo "| then 8 clients × 4 × 64 MiB, aggregate | ${m_sdw} MiB/s | ${m_snw} MiB/s | $(awk -v a="$m_snw" -v b="$m_sdw" 'BEGIN { printf "%.2f", a / b }') |"
		echo "| 8 clients × 4 × 64 MiB redirected to the bucket (distribution's redirect, --s3-redirect), aggregate | ${m_sdr} MiB/s | ${m_snr} MiB/s | $(awk -v a="$m_snr" -v b="$m_sdr" 'BEGIN { printf "%.2f", a / b }') |"
	} >"$NM_WORK/table.md"
	cat "$NM_WORK/table.md"
	[ -z "$TABLE_OUT" ] || cp "$NM_WORK/table.md" "$TABLE_OUT"
	exit 0
}

# --- the upstream over TLS (-t) ----------------------------------------------

bench_tls()
{
	# Go reads its extra trust from SSL_CERT_FILE.
	export SSL_CERT_FILE="$UP_CA2"
	T_U="" T_D1="" T_N1="" T_D12="" T_N12="" T_NG=""
	for r in $(seq 1 "$RUNS"); do
		say "run $r of $RUNS: TLS upstream, cold blob, one client"
		T_U="$T_U $(direct1)"
		dist_start; T_D1="$T_D1 $(cold1 "$DIST_URL")"; dist_stop
		mirror_start --upstream-ca "$UP_CA2"
		T_N1="$T_N1 $(cold1 "$NM_URL")"; mirror_stop
		say "run $r of $RUNS: TLS upstream, cold blob, 12 clients"
		dist_start; set -- $(cold12 "$DIST_URL"); dist_stop
		T_D12="$T_D12 $1"
		mirror_start --upstream-ca "$UP_CA2"
		set -- $(cold12 "$NM_URL"); mirror_stop
		T_N12="$T_N12 $1" T_NG="$T_NG $2"
	done
	# shellcheck disable=SC2086
	{
		m_tu=$(median $T_U) m_td1=$(median $T_D1) m_tn1=$(median $T_N1)
		m_td12=$(median $T_D12) m_tn12=$(median $T_N12)
		max_tng=$(printf '%s\n' $T_NG | sort -g | tail -n 1)
	}
	{
		echo "nixmirror bench, TLS upstream: median of $RUNS runs, $(nproc) cores, $(date -u +%Y-%m-%d)"
		echo
		echo "| figure | distribution | nixmirror | ratio |"
		echo "|---|---|---|---|"
		echo "| cold blob, 1 client (64 MiB), wall | ${m_td1} s | ${m_tn1} s | $(ratio "$m_tn1" "$m_td1") |"
		echo "| cold blob, 1 client, vs upstream directly (${m_tu} s) | | ${m_tn1} s | $(ratio "$m_tn1" "$m_tu") |"
		echo "| cold blob, 12 clients, wall (nixmirror's upstream GETs: at most ${max_tng}) | ${m_td12} s | ${m_tn12} s | $(ratio "$m_tn12" "$m_td12") |"
	} >"$NM_WORK/table.md"
	cat "$NM_WORK/table.md"
	[ -z "$TABLE_OUT" ] || cp "$NM_WORK/table.md" "$TABLE_OUT"
	exit 0
}

# --- the run ------------------------------------------------------------------

ratio()
{
	awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'
}
verdict()
{
	awk "BEGIN { exit !($1) }" && echo PASS || echo MISS
}

if [ "$TLS_ONLY" = 1 ]; then
	say "upstream: docker-registry with token auth over TLS, 64 MiB layer"
	up_start tls
	bench_tls
fi
say "upstream: docker-registry with token auth, 64 MiB layer"
up_start
[ "$S3_ONLY" = 0 ] || bench_s3
say "building the big-closure package set (once)"
big_build
say "closure: $(echo "$BIG_PATHS" | wc -l) paths, $((BIG_BYTES / 1048576)) MiB"

D_C1="" N_C1="" U_C1="" D_C12="" N_C12="" D_G="" N_G=""
D_W="" N_W="" D_P50="" D_P99="" N_P50="" N_P99="" T_PZ="" N_NIX=""
for r in $(seq 1 "$RUNS"); do
	say "run $r of $RUNS: cold blob, one client"
	U_C1="$U_C1 $(direct1 uc1)"
	dist_start; D_C1="$D_C1 $(cold1 "$DIST_URL" dc1 "$DIST_PID")"; dist_stop
	mirror_start; N_C1="$N_C1 $(cold1 "$NM_URL" nc1 "$NM_PID")"; mirror_stop

	say "run $r of $RUNS: cold blob, 12 clients"
	dist_start; set -- $(cold12 "$DIST_URL" dc12 "$DIST_PID"); dist_stop
	D_C12="$D_C12 $1" D_G="$D_G $2"
	mirror_start; set -- $(cold12 "$NM_URL" nc12 "$NM_PID")
	N_C12="$N_C12 $1" N_G="$N_G $2"

	say "run $r of $RUNS: warm blob, 8 clients x 4"
	N_W="$N_W $(warm "$NM_URL" nw "$NM_PID")"
	say "run $r of $RUNS: manifest by digest, wrk -c32"
	set -- $(manifest_lat "$NM_URL")
	N_P50="$N_P50 $1" N_P99="$N_P99 $2"
	N_RSS=$(rss_of "$NM_PID")
	mirror_stop

	dist_start
	cold1 "$DIST_URL" >/dev/null
	D_W="$D_W $(warm "$DIST_URL" dw "$DIST_PID")"
	set -- $(manifest_lat "$DIST_URL")
	D_P50="$D_P50 $1" D_P99="$D_P99 $2"
	D_RSS=$(rss_of "$DIST_PID")
	dist_stop

	say "run $r of $RUNS: Nix image, cold, and tar | pigz -6"
	T_PZ="$T_PZ $(tar_pigz)"
	set -- $(nix_image)
	N_NIX="$N_NIX $1"
	NIX_LAYERS=$2
done

# shellcheck disable=SC2086
{
	m_uc1=$(median $U_C1) m_dc1=$(median $D_C1) m_nc1=$(median $N_C1)
	m_dc12=$(median $D_C12) m_nc12=$(median $N_C12)
	m_dg=$(median $D_G) m_ng=$(median $N_G)
	m_dw=$(median $D_W) m_nw=$(median $N_W)
	m_dp50=$(median $D_P50) m_dp99=$(median $D_P99)
	m_np50=$(median $N_P50) m_np99=$(median $N_P99)
	m_pz=$(median $T_PZ) m_nix=$(median $N_NIX)
	max_np99=$(printf '%s\n' $N_P99 | sort -g | tail -n 1)
	max_ng=$(printf '%s\n' $N_G | sort -g | tail -n 1)
}

{
	echo "nixmirror bench: median of $RUNS runs, $(nproc) cores, $(date -u +%Y-%m-%d)"
	echo
	echo "| figure | distribution | nixmirror | ratio | limit | |"
	echo "|---|---|---|---|---|---|"
	echo "| cold blob, 1 client (64 MiB), wall | ${m_dc1} s | ${m_nc1} s | $(ratio "$m_nc1" "$m_dc1") | ≤ 0.80 | $(verdict "$m_nc1 <= 0.8 * $m_dc1") |"
	echo "| cold blob, 1 client, vs upstream directly (${m_uc1} s) | | ${m_nc1} s | $(ratio "$m_nc1" "$m_uc1") | ≤ 1.50 | $(verdict "$m_nc1 <= 1.5 * $m_uc1") |"
	echo "| cold blob, 12 clients, wall | ${m_dc12} s | ${m_nc12} s | $(ratio "$m_nc12" "$m_dc12") | ≤ 0.50 | $(verdict "$m_nc12 <= 0.5 * $m_dc12") |"
	echo "| cold blob, 12 clients, upstream GETs | ${m_dg} | ${m_ng} (max ${max_ng}) | | 1 | $(verdict "$max_ng == 1") |"
	echo "| warm blob, 8 clients × 4 × 64 MiB, aggregate | ${m_dw} MiB/s | ${m_nw} MiB/s | $(ratio "$m_nw" "$m_dw") | ≥ 2.00 | $(verdict "$m_nw >= 2 * $m_dw") |"
	echo "| manifest by digest, wrk -c32, p50 | ${m_dp50} ms | ${m_np50} ms | $(ratio "$m_np50" "$m_dp50") | | |"
	echo "| manifest by digest, wrk -c32, p99 (nixmirror's worst run ${max_np99} ms) | ${m_dp99} ms | ${m_np99} ms | $(ratio "$m_np99" "$m_dp99") | ≤ 10 ms every run | $(verdict "$max_np99 <= 10") |"
	echo "| Nix image, $((BIG_BYTES / 1048576)) MiB closure ($NIX_LAYERS layers), cold, vs tar \\| pigz -6 (${m_pz} s) | | ${m_nix} s | $(ratio "$m_nix" "$m_pz") | ≤ 1.00 | $(verdict "$m_nix <= $m_pz") |"
	echo "| RSS after the load (peak) | ${D_RSS% *} MiB (${D_RSS#* }) | ${N_RSS% *} MiB (${N_RSS#* }) | | ≤ 20 MiB | $(verdict "${N_RSS% *} <= 20") |"
	echo
	echo "Where the CPU went (medians): CPU seconds of the proxy (or of the"
	echo "upstream, fetched directly); in brackets, those of all $(nproc) cores"
	echo "together while the figure ran (clients, proxy, upstream and token"
	echo "issuer), and how busy that kept the cores."
	echo
	echo "| figure | upstream directly | distribution | nixmirror |"
	echo "|---|---|---|---|"
	# shellcheck disable=SC2046
	set -- $(cpu_median uc1) $(cpu_median dc1) $(cpu_median nc1)
	echo "| cold blob, 1 client | $1 s ($2 s, $3 %) | $4 s ($5 s, $6 %) | $7 s ($8 s, $9 %) |"
	# shellcheck disable=SC2046
	set -- $(for _n in uc1 dc1 nc1; do median $(cat "$NM_WORK/ttfb.$_n"); done)
	echo "| cold blob, 1 client, time to the first byte (through a proxy it includes the upstream's 401 and the token) | $(ms "$1") | $(ms "$2") | $(ms "$3") |"
	# shellcheck disable=SC2046
	set -- $(cpu_median dc12) $(cpu_median nc12)
	echo "| cold blob, 12 clients | | $1 s ($2 s, $3 %) | $4 s ($5 s, $6 %) |"
	# shellcheck disable=SC2046
	set -- $(cpu_median dw) $(cpu_median nw)
	echo "| warm blob, 8 clients × 4 | | $1 s ($2 s, $3 %) | $4 s ($5 s, $6 %) |"
	# Had the proxy taken no CPU, its share of the busy cores would have
	# gone to the clients: about the most any proxy reaches here.
	echo "| warm blob, the most the clients' own CPU allows (rate × all / (all − proxy)) | | $(awk -v r="$m_dw" -v p="$1" -v a="$2" 'BEGIN { printf "%.0f", r * a / (a - p) }') MiB/s | $(awk -v r="$m_nw" -v p="$4" -v a="$5" 'BEGIN { printf "%.0f", r * a / (a - p) }') MiB/s |"
} >"$NM_WORK/table.md"
cat "$NM_WORK/table.md"
[ -z "$TABLE_OUT" ] || cp "$NM_WORK/table.md" "$TABLE_OUT"
