# tests/upstream/lib_upstream.sh: a real upstream registry for the
# pull-through cache tests (sourced after tests/lib.sh, POSIX sh).
#
# - a token issuer shaped like auth.docker.io (token_issuer.py), whose
#   signing key's self-signed certificate the registry trusts;
# - Debian's docker-registry (CNCF distribution 2.8) with `auth: token`,
#   its access log on, optionally with TLS (a server certificate for
#   127.0.0.1 signed by a second test CA);
# - images built with umoci from busybox-static and pushed with skopeo:
#     library/busyimg:latest  OCI manifest, busybox, Cmd prints $UP_BUSY_LINE
#     library/busyv2:latest   the same content pushed as Docker schema2
#     library/bigimg:latest   one 24 MiB incompressible layer
#     library/multi:latest    an OCI index: linux/amd64 + linux/arm64
#     private/secret:latest   busyimg again, but anonymous tokens get no
#                             access to private/ (the registry says 401)
#
# Everything lives under $NM_WORK/up, and every process is tracked so that
# lib.sh's trap stops it.

UP_PY=/usr/bin/python3
UP_HERE=$NM_TOP/tests/upstream
UP_DIR=$NM_WORK/up
UP_USER=testuser
UP_PASS=testpass
UP_SERVICE=test-registry
UP_ISSUER=test-issuer
UP_BUSY_LINE="hello from busyimg"
UP_BIG_SIZE=25165824
UP_PROBE_UA=nm-test-probe	# User-Agent of the tests' own upstream requests
UP_REG_PORT=""
UP_REG_TLS=0

# Needs what the upstream is made of; skips (off CI) when something is missing.
up_need()
{
	need docker-registry skopeo umoci openssl curl jq sha256sum
	[ -x "$UP_PY" ] || skip "$UP_PY not installed"
	[ -x /bin/busybox ] || skip "busybox-static not installed"
	ldd /bin/busybox 2>&1 | grep -q 'not a dynamic executable' ||
	    skip "/bin/busybox is not static (busybox-static)"
}

# Makes the work dir, the token signing key and its self-signed certificate.
up_init()
{
	up_need
	mkdir -p "$UP_DIR"
	openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 \
	    -subj "/CN=nixmirror test token signer" \
	    -keyout "$UP_DIR/tokkey.pem" -out "$UP_DIR/tokcert.pem" \
	    >"$UP_DIR/openssl.log" 2>&1 || fail "openssl: token key"
	cat >"$UP_DIR/policy.json" <<'EOF'
{"default": [{"type": "insecureAcceptAnything"}]}
EOF
}

# Makes test CA 2 and a server certificate for IP 127.0.0.1 it signs; sets
# UP_CA2 (the CA certificate clients must trust).
up_tls_init()
{
	_d=$UP_DIR/tls
	mkdir -p "$_d"
	openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 \
	    -subj "/CN=nixmirror test CA 2" \
	    -addext "basicConstraints=critical,CA:TRUE" \
	    -addext "keyUsage=critical,keyCertSign,cRLSign" \
	    -keyout "$_d/ca2key.pem" -out "$_d/ca2.pem" \
	    >>"$UP_DIR/openssl.log" 2>&1 || fail "openssl: CA 2"
	openssl req -newkey rsa:2048 -nodes -sha256 -subj "/CN=127.0.0.1" \
	    -keyout "$_d/srvkey.pem" -out "$_d/srv.csr" \
	    >>"$UP_DIR/openssl.log" 2>&1 || fail "openssl: server key"
	printf '%s\n' "subjectAltName=IP:127.0.0.1" \
	    "basicConstraints=CA:FALSE" \
	    "keyUsage=critical,digitalSignature,keyEncipherment" \
	    "extendedKeyUsage=serverAuth" >"$_d/srv.ext"
	openssl x509 -req -in "$_d/srv.csr" -CA "$_d/ca2.pem" \
	    -CAkey "$_d/ca2key.pem" -CAcreateserial -days 2 -sha256 \
	    -extfile "$_d/srv.ext" -out "$_d/srv.pem" \
	    >>"$UP_DIR/openssl.log" 2>&1 || fail "openssl: server certificate"
	# skopeo reads CA certificates from *.crt in a directory.
	mkdir -p "$_d/certs.d"
	cp "$_d/ca2.pem" "$_d/certs.d/ca2.crt"
	UP_CA2=$_d/ca2.pem
}

# Waits (10 s at most) for a file to appear: up_wait_file FILE PID WHAT.
up_wait_file()
{
	_i=0
	while [ ! -s "$1" ]; do
		nm_alive "$2" || fail "$3 exited at start"
		[ "$_i" -lt 100 ] || fail "$3 does not start in 10 s"
		sleep 0.1
		_i=$((_i + 1))
	done
}

# Starts the token issuer on a free port (extra args go to it, e.g.
# --require-auth); sets UP_TOK_PID, UP_TOK_PORT, UP_TOK_URL, UP_TOK_LOG.
# The port stays the same when it is started again.
up_token_start()
{
	UP_TOK_LOG=$UP_DIR/token.log
	_pf=$UP_DIR/token.port
	rm -f "$_pf"
	case $NM_LOGS in
	*"$UP_DIR/token.err"*) ;;
	*) NM_LOGS="$NM_LOGS $UP_DIR/token.err $UP_TOK_LOG" ;;
	esac
	"$UP_PY" "$UP_HERE/token_issuer.py" \
	    --listen "127.0.0.1:${UP_TOK_PORT:-0}" --key "$UP_DIR/tokkey.pem" \
	    --cert "$UP_DIR/tokcert.pem" --issuer "$UP_ISSUER" \
	    --log "$UP_TOK_LOG" --user "$UP_USER" --password "$UP_PASS" \
	    --private private/ --port-file "$_pf" "$@" \
	    >>"$UP_DIR/token.err" 2>&1 </dev/null &
	UP_TOK_PID=$!
	nm_track "$UP_TOK_PID"
	up_wait_file "$_pf" "$UP_TOK_PID" "token issuer"
	UP_TOK_PORT=$(cat "$_pf")
	UP_TOK_URL=http://127.0.0.1:$UP_TOK_PORT/token
}

# Stops the token issuer.
up_token_stop()
{
	nm_kill_wait "$UP_TOK_PID" TERM 50 || nm_kill_wait "$UP_TOK_PID" KILL 20
	wait "$UP_TOK_PID" 2>/dev/null || true
	nm_untrack "$UP_TOK_PID"
}

# Writes the registry's config.yml.
up_registry_config()
{
	_tls=""
	if [ "$UP_REG_TLS" = 1 ]; then
		_tls="  tls:
    certificate: $UP_DIR/tls/srv.pem
    key: $UP_DIR/tls/srvkey.pem"
	fi
	cat >"$UP_DIR/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $UP_DIR/registry-data
  delete:
    enabled: false
  redirect:
    disable: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$UP_REG_PORT
  secret: nixmirror-test-secret
$_tls
auth:
  token:
    realm: $UP_TOK_URL
    service: $UP_SERVICE
    issuer: $UP_ISSUER
    rootcertbundle: $UP_DIR/tokcert.pem
EOF
}

# curl's option to trust the registry's certificate, when it has TLS.
up_curl_tls()
{
	[ "$UP_REG_TLS" = 1 ] && echo "--cacert $UP_DIR/tls/ca2.pem"
	return 0
}

# The status of the registry's /v2/ (401 when up with token auth).
up_registry_ping()
{
	# shellcheck disable=SC2046
	curl -s -o /dev/null -w '%{http_code}' --max-time 2 \
	    $(up_curl_tls) -A "$UP_PROBE_UA" "$UP_REG_URL/v2/" 2>/dev/null ||
	    true
}

# Starts docker-registry (after the token issuer); `up_registry_start tls`
# serves TLS with test CA 2's certificate.  Sets UP_REG_PID, UP_REG_PORT,
# UP_REG_ADDR, UP_REG_URL, UP_REG_LOG.  A restart keeps port and storage.
up_registry_start()
{
	if [ "${1:-}" = tls ]; then
		UP_REG_TLS=1
		[ -f "$UP_DIR/tls/srv.pem" ] || up_tls_init
	fi
	UP_REG_LOG=$UP_DIR/registry.log
	case $NM_LOGS in
	*"$UP_REG_LOG"*) ;;
	*) NM_LOGS="$NM_LOGS $UP_REG_LOG" ;;
	esac
	_try=0
	while :; do
		[ -n "$UP_REG_PORT" ] || UP_REG_PORT=$(nm_free_port)
		UP_REG_ADDR=127.0.0.1:$UP_REG_PORT
		UP_REG_URL=http://$UP_REG_ADDR
		[ "$UP_REG_TLS" = 1 ] && UP_REG_URL=https://$UP_REG_ADDR
		up_registry_config
		docker-registry serve "$UP_DIR/registry.yml" \
		    >>"$UP_REG_LOG" 2>&1 </dev/null &
		UP_REG_PID=$!
		nm_track "$UP_REG_PID"
		_i=0
		while [ "$_i" -lt 200 ] && nm_alive "$UP_REG_PID"; do
			[ "$(up_registry_ping)" = 401 ] && return 0
			sleep 0.1
			_i=$((_i + 1))
		done
		nm_alive "$UP_REG_PID" &&
		    fail "docker-registry does not answer /v2/ in 20 s"
		nm_untrack "$UP_REG_PID"
		_try=$((_try + 1))
		[ "$_try" -lt 3 ] || fail "docker-registry exited at start"
		UP_REG_PORT=""	# the port may have been taken: another one
	done
}

# Stops the registry.
up_registry_stop()
{
	nm_kill_wait "$UP_REG_PID" TERM 50 || nm_kill_wait "$UP_REG_PID" KILL 20
	wait "$UP_REG_PID" 2>/dev/null || true
	nm_untrack "$UP_REG_PID"
}

# Starts the token issuer and the registry, with the images pushed.
up_start()
{
	up_init
	up_token_start
	up_registry_start "$@"
	up_seed
}

# Runs umoci, failing with its output: up_umoci ARGS...
up_umoci()
{
	umoci "$@" >"$UP_DIR/umoci.out" 2>&1 || {
		cat "$UP_DIR/umoci.out" >&2
		fail "umoci $*"
	}
}

# Runs skopeo with the test policy, failing with its output.
up_skopeo()
{
	skopeo --policy "$UP_DIR/policy.json" "$@" >"$UP_DIR/skopeo.out" 2>&1 || {
		cat "$UP_DIR/skopeo.out" >&2
		fail "skopeo $*"
	}
}

# skopeo's TLS options for the registry, as the destination (dest), the
# source (src) or for inspect (no argument): up_tls_opts [dest|src].
up_tls_opts()
{
	_pre=${1:+$1-}
	if [ "$UP_REG_TLS" = 1 ]; then
		echo "--${_pre}cert-dir $UP_DIR/tls/certs.d"
	else
		echo "--${_pre}tls-verify=false"
	fi
}

# Builds the OCI layout $UP_DIR/layout with tags busy, busyv2, big,
# multi-amd64, multi-arm64 and multi (an index of the two).
up_build()
{
	_l=$UP_DIR/layout
	_r=$UP_DIR/rootfs
	rm -rf "$_l" "$_r"
	mkdir -p "$_r/busy/bin" "$_r/big/data"
	cp /bin/busybox "$_r/busy/bin/busybox"
	ln -s busybox "$_r/busy/bin/sh"
	# 24 MiB of AES-CTR keystream: deterministic and incompressible.
	openssl enc -aes-128-ctr -nosalt -K 000102030405060708090a0b0c0d0e0f \
	    -iv 00000000000000000000000000000000 </dev/zero 2>/dev/null |
	    head -c "$UP_BIG_SIZE" >"$_r/big/data/big.bin"
	[ "$(nm_size "$_r/big/data/big.bin")" = "$UP_BIG_SIZE" ] ||
	    fail "could not make the big file"
	up_umoci init --layout "$_l"
	up_umoci new --image "$_l:busy"
	up_umoci insert --image "$_l:busy" "$_r/busy" /
	up_umoci config --image "$_l:busy" --os linux --architecture amd64 \
	    --config.env PATH=/bin --config.cmd /bin/sh --config.cmd -c \
	    --config.cmd "echo $UP_BUSY_LINE"
	up_umoci config --image "$_l:busy" --tag busyv2 \
	    --config.label nixmirror.test=busyv2
	up_umoci config --image "$_l:busy" --tag multi-amd64 \
	    --config.label nixmirror.test=multi
	up_umoci config --image "$_l:multi-amd64" --tag multi-arm64 \
	    --architecture arm64
	up_umoci new --image "$_l:big"
	up_umoci insert --image "$_l:big" "$_r/big" /
	up_umoci config --image "$_l:big" --os linux --architecture amd64 \
	    --config.cmd /bin/true
	up_index "$_l" multi multi-amd64:amd64 multi-arm64:arm64
}

# Adds an OCI image index to a layout under a tag: up_index LAYOUT TAG
# CHILDTAG:ARCH...
up_index()
{
	_l=$1
	_t=$2
	shift 2
	_m='[]'
	for _c; do
		_ct=${_c%%:*}
		_arch=${_c#*:}
		_m=$(jq -c --arg t "$_ct" --arg a "$_arch" --argjson m "$_m" '
		    [.manifests[] |
		     select(.annotations["org.opencontainers.image.ref.name"] == $t)] |
		    if length != 1 then error("no tag " + $t) else . end |
		    $m + [{mediaType: .[0].mediaType, digest: .[0].digest,
			size: .[0].size,
			platform: ({architecture: $a, os: "linux"} +
			    (if $a == "arm64" then {variant: "v8"} else {} end))}]
		    ' "$_l/index.json") || fail "index: no tag $_ct in $_l"
	done
	jq -cn --argjson m "$_m" '{schemaVersion: 2,
	    mediaType: "application/vnd.oci.image.index.v1+json",
	    manifests: $m}' | tr -d '\n' >"$UP_DIR/index.tmp"
	_dg=$(nm_sha256 "$UP_DIR/index.tmp")
	_sz=$(nm_size "$UP_DIR/index.tmp")
	mv "$UP_DIR/index.tmp" "$_l/blobs/sha256/${_dg#sha256:}"
	jq --arg d "$_dg" --argjson s "$_sz" --arg t "$_t" '
	    .manifests += [{mediaType: "application/vnd.oci.image.index.v1+json",
		digest: $d, size: $s,
		annotations: {"org.opencontainers.image.ref.name": $t}}]
	    ' "$_l/index.json" >"$UP_DIR/index.json.tmp" &&
	    mv "$UP_DIR/index.json.tmp" "$_l/index.json" ||
	    fail "index: cannot update $_l/index.json"
}

# Pushes one tag of the layout: up_push TAG NAME:TAG [skopeo copy args...].
up_push()
{
	_src=$1
	_dst=$2
	shift 2
	# shellcheck disable=SC2046
	up_skopeo copy --retry-times 2 $(up_tls_opts dest) \
	    --dest-creds "$UP_USER:$UP_PASS" "$@" \
	    "oci:$UP_DIR/layout:$_src" "docker://$UP_REG_ADDR/$_dst"
}

# Builds and pushes the images, then reads back what the registry holds:
# sets UP_<IMG>_DG (manifest digest) and UP_<IMG>_MT (media type) for BUSY,
# BUSYV2, BIG, MULTI, and UP_MULTI_AMD64, UP_MULTI_ARM64, UP_BIG_LAYER,
# UP_BUSY_LAYER, UP_BUSY_CONFIG.
up_seed()
{
	[ -d "$UP_DIR/layout" ] || up_build
	up_push busy library/busyimg:latest
	up_push busyv2 library/busyv2:latest --format v2s2
	up_push big library/bigimg:latest
	up_push multi library/multi:latest --all
	up_push busy private/secret:latest
	up_read_back
}

# Reads the pushed images back with curl and a token; sets the UP_* digests.
up_read_back()
{
	up_get_manifest library/busyimg latest "$UP_DIR/m.busy"
	UP_BUSY_DG=$UP_DG UP_BUSY_MT=$UP_MT
	up_get_manifest library/busyv2 latest "$UP_DIR/m.busyv2"
	UP_BUSYV2_DG=$UP_DG UP_BUSYV2_MT=$UP_MT
	up_get_manifest library/bigimg latest "$UP_DIR/m.big"
	UP_BIG_DG=$UP_DG UP_BIG_MT=$UP_MT
	up_get_manifest library/multi latest "$UP_DIR/m.multi"
	UP_MULTI_DG=$UP_DG UP_MULTI_MT=$UP_MT
	UP_BUSY_LAYER=$(jq -r '.layers[0].digest' "$UP_DIR/m.busy")
	UP_BUSY_CONFIG=$(jq -r '.config.digest' "$UP_DIR/m.busy")
	UP_BIG_LAYER=$(jq -r '.layers[0].digest' "$UP_DIR/m.big")
	UP_MULTI_AMD64=$(jq -r '.manifests[] |
	    select(.platform.architecture == "amd64") | .digest' "$UP_DIR/m.multi")
	UP_MULTI_ARM64=$(jq -r '.manifests[] |
	    select(.platform.architecture == "arm64") | .digest' "$UP_DIR/m.multi")
	[ "$UP_BUSY_MT" = "$MT_OCI" ] ||
	    fail "upstream busyimg is $UP_BUSY_MT, not OCI"
	[ "$UP_BUSYV2_MT" = "$MT_DOCKER" ] ||
	    fail "upstream busyv2 is $UP_BUSYV2_MT, not Docker schema2"
	[ "$UP_MULTI_MT" = "$MT_OINDEX" ] ||
	    fail "upstream multi is $UP_MULTI_MT, not an OCI index"
	case $UP_MULTI_AMD64$UP_MULTI_ARM64 in
	sha256:*sha256:*) ;;
	*) fail "upstream multi has no amd64 and arm64 children" ;;
	esac
}

# Prints an anonymous pull token for a repository: up_token NAME.
up_token()
{
	curl -sf --max-time 10 -A "$UP_PROBE_UA" \
	    "$UP_TOK_URL?service=$UP_SERVICE&scope=repository:$1:pull" |
	    jq -r .token
}

# GETs a path from the registry with a pull token for NAME: prints the
# status; body in OUT, headers in OUT.hdr.  up_get NAME PATH OUT [curl args].
up_get()
{
	_name=$1
	_path=$2
	_out=$3
	shift 3
	_tok=$(up_token "$_name") || fail "no token for $_name"
	# shellcheck disable=SC2046
	curl -s -o "$_out" -D "$_out.hdr" -w '%{http_code}' --max-time 60 \
	    $(up_curl_tls) -A "$UP_PROBE_UA" \
	    -H "Authorization: Bearer $_tok" "$@" "$UP_REG_URL$_path" ||
	    echo "curl-failed-$?"
}

# A header of a file of response headers: up_hdr FILE NAME.
up_hdr()
{
	nm_hdr_of "$1" "$2"
}

# GETs a manifest from the registry into FILE, as upstream serves it; sets
# UP_DG and UP_MT.  up_get_manifest NAME REF FILE
up_get_manifest()
{
	_st=$(up_get "$1" "/v2/$1/manifests/$2" "$3" \
	    -H "Accept: $MT_DOCKER" -H "Accept: $MT_DLIST" \
	    -H "Accept: $MT_OCI" -H "Accept: $MT_OINDEX")
	[ "$_st" = 200 ] || fail "upstream GET $1:$2: status $_st"
	UP_DG=$(up_hdr "$3.hdr" Docker-Content-Digest)
	UP_MT=$(up_hdr "$3.hdr" Content-Type)
	[ "$UP_DG" = "$(nm_sha256 "$3")" ] ||
	    fail "upstream $1:$2: digest header $UP_DG is not the body's"
}

# The registry's access-log lines of requests by others than the tests'
# own probes and skopeo (that is, by nixmirror).
up_reg_access()
{
	[ -f "$UP_REG_LOG" ] || return 0
	grep -E '^[0-9.]+ - .*"(GET|HEAD|POST|PUT|PATCH|DELETE) /' \
	    "$UP_REG_LOG" | grep -vF "\"$UP_PROBE_UA\"" |
	    grep -vF '"skopeo/' || true
}

# Counts nixmirror's requests METHOD PATH (the path without a query) the
# registry answered 2xx or 3xx: up_reg_count METHOD PATH.
up_reg_count()
{
	up_reg_access | grep -F "\"$1 $2" | grep -E "\"$1 $2[? ]" |
	    grep -cE "\" [23][0-9][0-9] " || true
}

# Counts all of nixmirror's requests to the registry (any method, path,
# status).
up_reg_requests()
{
	up_reg_access | grep -c . || true
}

# Counts nixmirror's requests to the registry whose line contains a string
# (e.g. a digest), any method and status: up_reg_mentions STRING.
up_reg_mentions()
{
	up_reg_access | grep -cF -- "$1" || true
}

# Counts the token issuer's log lines that contain a string, leaving out
# the tests' own probes and skopeo's: up_tok_count STRING.
up_tok_count()
{
	[ -f "$UP_TOK_LOG" ] || { echo 0; return; }
	grep -F -- "$1" "$UP_TOK_LOG" | grep -vF "ua=$UP_PROBE_UA" |
	    grep -vF "ua=skopeo/" | grep -c . || true
}

# Starts a TCP listener that counts accepted connections into a file (one
# line per accept), on a given free port: up_counter_start PORT FILE.
# Sets UP_CNT_PID.
up_counter_start()
{
	: >"$2"
	"$UP_PY" -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(16)
open(sys.argv[2] + ".up", "w").write("up\n")
while True:
    c, _ = s.accept()
    with open(sys.argv[2], "a") as f:
        f.write("accept\n")
    c.close()
' "$1" "$2" </dev/null >>"$UP_DIR/counter.err" 2>&1 &
	UP_CNT_PID=$!
	nm_track "$UP_CNT_PID"
	up_wait_file "$2.up" "$UP_CNT_PID" "connection counter"
}

# Checks no file of a blob (or a temp file named after it) is under a data
# dir: up_check_not_stored WHAT DATA DIGEST.
up_check_not_stored()
{
	_hex=${3#sha256:}
	_found=$(find "$2" -name "*$_hex*" 2>/dev/null | head -n 3)
	if [ -z "$_found" ] && [ ! -e "$2/blobs/sha256/$(echo "$_hex" |
	    cut -c1-2)/$_hex" ]; then
		ok "$1: $3 not in the store"
	else
		bad "$1: $3 is in the store: $_found"
	fi
}

# Proves the upstream works on its own, before nixmirror is involved:
# skopeo (anonymous) reads busyimg's manifest through the token flow and
# copies bigimg, and the issuer logged the pull token it handed out.
up_selftest()
{
	_n0=$(grep -c "scope=repository:library/busyimg:pull " "$UP_TOK_LOG" ||
	    true)
	# shellcheck disable=SC2046
	up_skopeo inspect --raw $(up_tls_opts) \
	    "docker://$UP_REG_ADDR/library/busyimg:latest"
	[ "$(sha256sum <"$UP_DIR/skopeo.out" | cut -d' ' -f1)" = \
	    "${UP_BUSY_DG#sha256:}" ] ||
	    fail "upstream self-test: skopeo reads another busyimg manifest"
	_n1=$(grep -c "scope=repository:library/busyimg:pull " "$UP_TOK_LOG" ||
	    true)
	[ "$_n1" -gt "$_n0" ] ||
	    fail "upstream self-test: skopeo got no token from the issuer"
	grep "scope=repository:library/busyimg:pull " "$UP_TOK_LOG" |
	    tail -n 1 | grep -q "user=- .*status=200 " ||
	    fail "upstream self-test: no anonymous pull token in the issuer log"
	# Without a token the registry says where to get one.
	# shellcheck disable=SC2046
	_st=$(curl -s -o /dev/null -D "$UP_DIR/chal.hdr" -w '%{http_code}' \
	    $(up_curl_tls) -A "$UP_PROBE_UA" \
	    "$UP_REG_URL/v2/library/busyimg/manifests/latest") || true
	[ "$_st" = 401 ] || fail "upstream self-test: no-token GET gave $_st"
	up_hdr "$UP_DIR/chal.hdr" WWW-Authenticate | grep -q "realm=\"$UP_TOK_URL\"" ||
	    fail "upstream self-test: the challenge does not name the issuer"
	# An anonymous token cannot push.
	# shellcheck disable=SC2046
	_st=$(curl -s -o /dev/null -w '%{http_code}' $(up_curl_tls) \
	    -A "$UP_PROBE_UA" -X POST \
	    -H "Authorization: Bearer $(up_token library/busyimg)" \
	    "$UP_REG_URL/v2/library/busyimg/blobs/uploads/") || true
	[ "$_st" = 401 ] || fail "upstream self-test: anonymous push gave $_st"
	rm -rf "$UP_DIR/selftest"
	# shellcheck disable=SC2046
	up_skopeo copy $(up_tls_opts src) \
	    "docker://$UP_REG_ADDR/library/bigimg:latest" \
	    "oci:$UP_DIR/selftest:big"
	[ -f "$UP_DIR/selftest/blobs/sha256/${UP_BIG_LAYER#sha256:}" ] ||
	    fail "upstream self-test: skopeo did not copy bigimg's layer"
	rm -rf "$UP_DIR/selftest"
	ok "upstream works on its own (skopeo through the token flow)"
}

# Starts bad_upstream.py (extra args go to it, e.g. --chunk-delay 0.02);
# sets UP_BAD_PID, UP_BAD_PORT, UP_BAD_URL, UP_BAD_LOG, UP_BAD_INFO.
up_bad_start()
{
	mkdir -p "$UP_DIR"
	UP_BAD_LOG=$UP_DIR/bad.log
	UP_BAD_INFO=$UP_DIR/bad.json
	NM_LOGS="$NM_LOGS $UP_DIR/bad.err $UP_BAD_LOG"
	rm -f "$UP_DIR/bad.port"
	"$UP_PY" "$UP_HERE/bad_upstream.py" --log "$UP_BAD_LOG" \
	    --info "$UP_BAD_INFO" --port-file "$UP_DIR/bad.port" "$@" \
	    >>"$UP_DIR/bad.err" 2>&1 </dev/null &
	UP_BAD_PID=$!
	nm_track "$UP_BAD_PID"
	up_wait_file "$UP_DIR/bad.port" "$UP_BAD_PID" "bad upstream"
	UP_BAD_PORT=$(cat "$UP_DIR/bad.port")
	UP_BAD_URL=http://127.0.0.1:$UP_BAD_PORT
}

# A field of bad_upstream's info: up_bad_info REPO FIELD.
up_bad_info()
{
	jq -r --arg r "$1" --arg f "$2" '.[$r][$f]' "$UP_BAD_INFO"
}

# Counts bad_upstream's requests for METHOD PATH: up_bad_count METHOD PATH.
up_bad_count()
{
	grep -cF "$1 $2 " "$UP_BAD_LOG" || true
}
