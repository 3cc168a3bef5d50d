# tests/e2e_s3.sh: two replicas A and B sharing one bucket of a real Ceph
# RGW (tests/lib_ceph.sh), with --peers, in front of the token-auth
# upstream: what A fetched or built B serves with the upstream stopped and
# without Nix; a Nix image asked of both at once is built once; 12 cold
# clients over both make 1 upstream GET; a kill -9 mid-upload leaves no
# object; with radosgw stopped, what is local is served and the rest is a
# 503; with --s3-redirect, containerd pulls the blobs from radosgw itself.

. "${NM_TOP:-$(dirname "$0")/..}/tests/lib.sh"
. "$NM_TOP/tests/lib_ceph.sh"
. "$NM_TOP/tests/lib_containerd.sh"
. "$NM_TOP/tests/upstream/lib_upstream.sh"

need curl jq skopeo git sha256sum containerd ctr runc

rc=0
"$NM_BIN" serve --s3-secret-key "$S3_SECRET" >"$NM_WORK/flag.out" 2>&1 || rc=$?
check_eq "a secret as a flag is refused" 2 "$rc"
check_contains "the refusal says where it goes" "config file or the environment" \
    "$(cat "$NM_WORK/flag.out")"

ceph_start
check_eq "bucket created" 200 "$(s3 PUT /nmshared -o /dev/null -w '%{http_code}')"
up_start

# A second big image, cold until the kill test: 24 MiB of another keystream.
mkdir -p "$UP_DIR/rootfs/big2/data"
openssl enc -aes-128-ctr -nosalt -K 0f0e0d0c0b0a09080706050403020100 \
    -iv 00000000000000000000000000000000 </dev/zero 2>/dev/null |
    head -c "$UP_BIG_SIZE" >"$UP_DIR/rootfs/big2/data/big.bin"
up_umoci new --image "$UP_DIR/layout:big2"
up_umoci insert --image "$UP_DIR/layout:big2" "$UP_DIR/rootfs/big2" /
up_push big2 library/bigtwo:latest
up_get_manifest library/bigtwo latest "$UP_DIR/m.big2"
BIG2_LAYER=$(jq -r '.layers[0].digest' "$UP_DIR/m.big2")
# A small image no replica fetches until radosgw is down.
mkdir -p "$UP_DIR/rootfs/third"
echo "the third image" >"$UP_DIR/rootfs/third/third.txt"
up_umoci new --image "$UP_DIR/layout:third"
up_umoci insert --image "$UP_DIR/layout:third" "$UP_DIR/rootfs/third" /
up_push third library/third:latest
up_get_manifest library/third latest "$UP_DIR/m.third"
THIRD_LAYER=$(jq -r '.layers[0].digest' "$UP_DIR/m.third")

REPO=$NM_WORK/pkgs
nm_pkgs_repo "$REPO"

export AWS_ACCESS_KEY_ID="$S3_ACCESS" AWS_SECRET_ACCESS_KEY="$S3_SECRET"
PA=$(nm_free_port)
PB=$(nm_free_port)
A_URL=http://127.0.0.1:$PA
B_URL=http://127.0.0.1:$PB
set -- --upstream "docker.io=$UP_REG_URL" --s3-endpoint "$S3_URL" \
    --s3-bucket nmshared --s3-prefix site --peers "$A_URL,$B_URL" \
    --pkgs-repo "$REPO" --build-timeout 120
REPLICA_ARGS=$*

# Starts replica A or B (again, on its data dir): replica A|B [ARGS...].
replica()
{
	_r=$1
	shift
	if [ "$_r" = A ]; then
		_p=$PA
	else
		_p=$PB
	fi
	# shellcheck disable=SC2086
	if eval "[ -n \"\${${_r}_DATA:-}\" ]"; then
		eval "NM_DATA=\$${_r}_DATA"
		NM_FIXED_PORT=$_p nm_restart $REPLICA_ARGS "$@"
	else
		NM_FIXED_PORT=$_p nm_start $REPLICA_ARGS "$@"
	fi
	eval "${_r}_DATA=\$NM_DATA ${_r}_PID=\$NM_PID ${_r}_LOG=\$NM_LOG"
}

# Stops a replica with SIGTERM: replica_stop A|B.
replica_stop()
{
	eval "NM_PID=\$${1}_PID"
	nm_stop
}

# skopeo copies an image into an OCI layout: pull_ok WHAT HOST:PORT
# NAME:TAG DIR.
pull_ok()
{
	rm -rf "$4"
	if skopeo copy --src-tls-verify=false "docker://$2/$3" "oci:$4:x" \
	    >"$NM_WORK/skopeo.out" 2>&1; then
		ok "$1"
	else
		cat "$NM_WORK/skopeo.out" >&2
		bad "$1"
	fi
}

# GETs a blob and checks its bytes: blob_ok WHAT URL NAME DIGEST.
blob_ok()
{
	_st=$(http_status "$2/v2/$3/blobs/$4")
	check_eq "$1: status" 200 "$_st"
	check_eq "$1: bytes match the digest" "$4" "$(nm_sha256 "$NM_BODY")"
}

# --- What A fetches, B serves with the upstream stopped. ---------------
# B starts later: a digest it owns is fetched by A once B does not answer.
replica A
st=$(http_status "$A_URL/v2/library/busyimg/manifests/latest" -H "$ACCEPT_OCI")
check_eq "A: busyimg manifest" 200 "$st"
check_eq "A: busyimg digest is upstream's" "$UP_BUSY_DG" "$(hdr Docker-Content-Digest)"
blob_ok "A: busyimg layer" "$A_URL" library/busyimg "$UP_BUSY_LAYER"
blob_ok "A: busyimg config" "$A_URL" library/busyimg "$UP_BUSY_CONFIG"
# A blob B never asks for until radosgw is down.
st=$(http_status "$A_URL/v2/library/busyv2/manifests/latest" -H "$ACCEPT_DOCKER")
check_eq "A: busyv2 manifest" 200 "$st"
V2_CONFIG=$(jq -r .config.digest "$NM_BODY")
blob_ok "A: busyv2 config" "$A_URL" library/busyv2 "$V2_CONFIG"
s3_flushed "$A_URL"
st=$(s3 GET "/nmshared/site/blobs/sha256/${UP_BUSY_LAYER#sha256:}" -o "$NM_WORK/obj" -w '%{http_code}')
check_eq "the bucket holds the layer" 200 "$st"
check_eq "the bucket's object has the layer's bytes" "$UP_BUSY_LAYER" "$(nm_sha256 "$NM_WORK/obj")"
st=$(s3 GET "/nmshared/site/repos/docker.io/library/busyimg/_tags/latest" -o "$NM_WORK/obj" -w '%{http_code}')
check_eq "the bucket holds the tag" 200 "$st"
check_eq "the tag names the manifest" "$UP_BUSY_DG" "$(jq -r .digest "$NM_WORK/obj")"

up_registry_stop
replica B
pull_ok "B: skopeo pulls busyimg with the upstream stopped" \
    "127.0.0.1:$PB" library/busyimg:latest "$NM_WORK/oci"
check_eq "B: the pulled layer is upstream's" "$UP_BUSY_LAYER" \
    "$(jq -r '.manifests[0].digest' "$NM_WORK/oci/index.json" |
    sed 's/^sha256://' | xargs -I{} jq -r '.layers[0].digest' "$NM_WORK/oci/blobs/sha256/{}")"
check_eq "B: fetched nothing from the upstream" 0 \
    "$(grep -cE 'fetching blob [^ ]+ of [^ ]+$' "$B_LOG" || true)"
check_contains "B: streamed the layer from the bucket" \
    "fetching blob $UP_BUSY_LAYER of docker.io/library/busyimg from the shared bucket" \
    "$(cat "$B_LOG")"
up_registry_start

# The builds a replica's log shows after line N: builds_since LOG N.
builds_since()
{
	tail -n +"$(($2 + 1))" "$1" | grep -cE -- "$NM_BUILD_RE" || true
}

# --- A Nix image built by one replica is served by the other without Nix.
# A is asked; the image key's owner (A, or B when A asks it) builds it.
dgA=$(NM_URL=$A_URL nm_manifest nix/shell/hello latest "$NM_WORK/mA" "$ACCEPT_OCI")
nA=$(builds_since "$A_LOG" 0)
nB=$(builds_since "$B_LOG" 0)
check_eq "one of A and B built the image, once" 1 "$((nA + nB))"
if [ "$nA" = 1 ]; then
	X_URL=$A_URL Y=B Y_URL=$B_URL Y_LOG=$B_LOG
else
	X_URL=$B_URL Y=A Y_URL=$A_URL Y_LOG=$A_LOG
fi
s3_flushed "$X_URL"
dgY=$(NM_URL=$Y_URL nm_manifest nix/shell/hello latest "$NM_WORK/mB" "$ACCEPT_OCI")
check_eq "$Y: the Nix image is the builder's" "$dgA" "$dgY"
for l in $(jq -r '.config.digest, .layers[].digest' "$NM_WORK/mB"); do
	blob_ok "$Y: nix/shell/hello blob ${l#sha256:}" "$Y_URL" nix/shell/hello "$l"
done
check_contains "$Y streamed the Nix layers from the bucket" \
    "of @nix/shell/hello from the shared bucket" "$(cat "$Y_LOG")"
check_eq "$Y ran no build" 0 "$(builds_since "$Y_LOG" 0)"
check_eq "$Y ran no Nix" 0 "$(grep -cE ' (info|warn) building |nix-(instantiate|store|build)' \
    "$Y_LOG" || true)"
check_contains "$Y says another replica built it" \
    "built by another replica" "$(cat "$Y_LOG")"

# --- A new image asked of A and B at once is built once. ----------------
a0=$(wc -l <"$A_LOG")
b0=$(wc -l <"$B_LOG")
for r in A B; do
	eval "_u=\$${r}_URL"
	curl -s -o "$NM_WORK/fc.$r" -w '%{http_code}' -H "$ACCEPT_OCI" \
	    "$_u/v2/nix/figlet/cowsay/manifests/latest" >"$NM_WORK/fc.$r.st" &
	eval "${r}_CURL=\$!"
done
# shellcheck disable=SC2154
wait "$A_CURL" "$B_CURL"
for r in A B; do
	check_eq "$r: figlet/cowsay manifest" 200 "$(cat "$NM_WORK/fc.$r.st")"
done
check_eq "A and B answered the same manifest" \
    "$(nm_sha256 "$NM_WORK/fc.A")" "$(nm_sha256 "$NM_WORK/fc.B")"
check_eq "asked of both at once, one replica built it" 1 \
    "$(($(builds_since "$A_LOG" "$a0") + $(builds_since "$B_LOG" "$b0")))"
check_contains "the other asked the key's owner" "asking its owner replica" \
    "$(tail -n +"$((a0 + 1))" "$A_LOG"; tail -n +"$((b0 + 1))" "$B_LOG")"
for l in $(jq -r '.config.digest, .layers[].digest' "$NM_WORK/fc.A"); do
	for r in A B; do
		eval "_u=\$${r}_URL"
		blob_ok "$r: nix/figlet/cowsay blob ${l#sha256:}" "$_u" \
		    nix/figlet/cowsay "$l"
	done
done

# --- Nix image owners: asking each other, unknown packages, one down. ---
# The owner of an image key, as rendezvous hashing over --peers picks it
# (proxy/peer.c): owner_of IMAGE (packages joined by "/", sorted).  The
# logs below show that it is right.
COMMIT=$(git -C "$REPO" rev-parse HEAD)
owner_of()
{
	_k="git:$REPO@$COMMIT|$(uname -m)-linux|$(echo "$1" | tr / ,)"
	_sa=$(printf '%s\n%s' "$A_URL" "$_k" | sha256sum | cut -c1-16)
	_sb=$(printf '%s\n%s' "$B_URL" "$_k" | sha256sum | cut -c1-16)
	if [ "$_sa" \> "$_sb" ]; then echo A; else echo B; fi
}
# Images not built yet: owners_of PACKAGE... prints each image (one or
# two of them, sorted) with its owner.
owners_of()
{
	for _x; do
		echo "$_x $(owner_of "$_x")"
		for _y; do
			if [ "$_x" \< "$_y" ]; then
				echo "$_x/$_y $(owner_of "$_x/$_y")"
			fi
		done
	done
}
owners_of busybox cacert coreutils iana-etc moreutils nano >"$NM_WORK/owners"
OWN_A=$(awk '$2 == "A" { print $1; exit }' "$NM_WORK/owners")
OWN_B=$(awk '$2 == "B" { print $1; exit }' "$NM_WORK/owners")
OWN_B2=$(awk '$2 == "B" { if (++n == 2) { print $1; exit } }' "$NM_WORK/owners")
[ -n "$OWN_A" ] && [ -n "$OWN_B2" ] || fail "no images for each owner"
# With one build slot each, A asked for B's image and B for A's at once:
# each asking job holds its replica's slot, and the other's request for
# it must still run there.
replica_stop A
replica_stop B
replica A --max-builds 1
replica B --max-builds 1
curl -s -o /dev/null -w '%{http_code}' --max-time 100 -H "$ACCEPT_OCI" \
    "$A_URL/v2/nix/$OWN_B/manifests/latest" >"$NM_WORK/x.A" &
xa=$!
curl -s -o /dev/null -w '%{http_code}' --max-time 100 -H "$ACCEPT_OCI" \
    "$B_URL/v2/nix/$OWN_A/manifests/latest" >"$NM_WORK/x.B" &
xb=$!
wait "$xa" "$xb" || true
check_eq "A, asked for B's image while B asks for A's" 200 "$(cat "$NM_WORK/x.A")"
check_eq "B, asked for A's image while A asks for B's" 200 "$(cat "$NM_WORK/x.B")"
check_contains "A asked B, the owner" \
    "image nix/$OWN_B at $COMMIT: asking its owner replica $B_URL" "$(cat "$A_LOG")"
check_contains "B asked A, the owner" \
    "image nix/$OWN_A at $COMMIT: asking its owner replica $A_URL" "$(cat "$B_LOG")"
# An unknown package asked of the replica that does not own it: the
# owner's 404 is the answer, and one evaluation ran.
owners_of nope1 nope2 nope3 nope4 nope5 nope6 >"$NM_WORK/owners"
NOPE=$(awk '$2 == "B" { print $1; exit }' "$NM_WORK/owners")
[ -n "$NOPE" ] || fail "no unknown image that B owns"
a0=$(wc -l <"$A_LOG")
b0=$(wc -l <"$B_LOG")
st=$(http_status "$A_URL/v2/nix/$NOPE/manifests/latest" -H "$ACCEPT_OCI")
nm_check_error "A: an unknown package B owns" 404 "$st" MANIFEST_UNKNOWN
check_contains "the message names it" "${NOPE%%/*}" "$(nm_error_message)"
check_eq "one evaluation, on the owner" "0 1" \
    "$(builds_since "$A_LOG" "$a0") $(builds_since "$B_LOG" "$b0")"
# With the owner down, the next replica on the hash (here A) builds.
replica_stop B
a0=$(wc -l <"$A_LOG")
check_eq "A: B's image with B down" 200 \
    "$(http_status "$A_URL/v2/nix/$OWN_B2/manifests/latest" -H "$ACCEPT_OCI")"
check_contains "A saw B down" "replica $B_URL does not answer" \
    "$(tail -n +"$((a0 + 1))" "$A_LOG")"
check_eq "A built it" 1 \
    "$(builds_since "$A_LOG" "$a0")"
replica_stop A
replica A
replica B

# --- A tag A resolved within the TTL is not asked upstream by B. --------
check_eq "A: multi by tag" 200 \
    "$(http_status "$A_URL/v2/library/multi/manifests/latest" -H "$ACCEPT_OCI")"
s3_flushed "$A_URL"
check_eq "B: multi by tag" 200 \
    "$(http_status "$B_URL/v2/library/multi/manifests/latest" -H "$ACCEPT_OCI")"
check_eq "B: multi is upstream's index" "$UP_MULTI_DG" "$(hdr Docker-Content-Digest)"
sleep 0.5	# the registry logs a request when it ends
check_eq "the upstream was asked for the tag once, by A" 1 \
    "$(($(up_reg_count GET /v2/library/multi/manifests/latest) + \
    $(up_reg_count HEAD /v2/library/multi/manifests/latest)))"

# --- 12 cold clients over A and B: one upstream GET. -------------------
for u in "$A_URL" "$B_URL"; do
	check_eq "bigimg manifest from $u" 200 \
	    "$(http_status "$u/v2/library/bigimg/manifests/latest" -H "$ACCEPT_OCI")"
done
pids=""
for i in 1 2 3 4 5 6; do
	curl -s -o "$NM_WORK/big.a$i" --max-time 120 \
	    "$A_URL/v2/library/bigimg/blobs/$UP_BIG_LAYER" &
	pids="$pids $!"
	curl -s -o "$NM_WORK/big.b$i" --max-time 120 \
	    "$B_URL/v2/library/bigimg/blobs/$UP_BIG_LAYER" &
	pids="$pids $!"
done
# shellcheck disable=SC2086
wait $pids || true
n=0
for f in "$NM_WORK"/big.a* "$NM_WORK"/big.b*; do
	[ "$(nm_sha256 "$f")" = "$UP_BIG_LAYER" ] && n=$((n + 1))
done
check_eq "12 clients over A and B got the right bytes" 12 "$n"
check_eq "the upstream served the blob once" 1 \
    "$(up_reg_count GET "/v2/library/bigimg/blobs/$UP_BIG_LAYER")"
check_contains "one replica streamed it from the other" \
    "of docker.io/library/bigimg from replica" "$(cat "$A_LOG" "$B_LOG")"

# --- kill -9 of A mid-upload: no object; B serves it; A cleans up. ------
replica_stop B
replica_stop A
replica A --s3-upload-rate 1500000
check_eq "A: bigtwo manifest" 200 \
    "$(http_status "$A_URL/v2/library/bigtwo/manifests/latest" -H "$ACCEPT_OCI")"
blob_ok "A: bigtwo layer (B is down)" "$A_URL" library/bigtwo "$BIG2_LAYER"
nm_until 'grep -q "uploading blobs/sha256/${BIG2_LAYER#sha256:}" "$A_LOG"' 300 ||
    fail "A did not start the upload"
sleep 2
kill -9 "$A_PID"
wait "$A_PID" 2>/dev/null || true
nm_untrack "$A_PID"
st=$(s3 HEAD "/nmshared/site/blobs/sha256/${BIG2_LAYER#sha256:}" -I -o /dev/null -w '%{http_code}')
check_eq "no object of the half-uploaded blob" 404 "$st"
check_eq "the killed upload is left in flight" 1 \
    "$(s3 GET "/nmshared?uploads=" | grep -o '<UploadId>' | wc -l)"
replica B
blob_ok "B: bigtwo layer with A dead" "$B_URL" library/bigtwo "$BIG2_LAYER"
replica A
s3_flushed "$A_URL"
s3_flushed "$B_URL"
check_contains "A abandoned the upload it left" \
    "abandoned the upload of blobs/sha256/${BIG2_LAYER#sha256:}" "$(cat "$A_LOG")"
check_eq "no upload is left in flight" 0 \
    "$(s3 GET "/nmshared?uploads=" | grep -o '<UploadId>' | wc -l)"
check_eq "B's /status.json: nothing waits for the bucket" 0 \
    "$(curl -s "$B_URL/status.json" | jq .store.s3_pending)"
check_contains "B's status page says so" "0 waiting to go up to the shared bucket" \
    "$(curl -s "$B_URL/")"
s3 GET "/nmshared/site/blobs/sha256/${BIG2_LAYER#sha256:}" -o "$NM_WORK/obj"
check_eq "the bucket now holds bigtwo's layer, whole" "$BIG2_LAYER" \
    "$(nm_sha256 "$NM_WORK/obj")"

# --- radosgw down: local blobs are served, and others while the upstream
# or a replica can give them; the rest is a 503. A is down meanwhile.
replica_stop A
ceph_rgw_stop
blob_ok "B: with radosgw (and A) down, a new blob comes from the upstream" \
    "$B_URL" library/third "$THIRD_LAYER"
up_registry_stop
blob_ok "B: a local blob with radosgw down" "$B_URL" library/busyimg "$UP_BUSY_LAYER"
check_eq "B: a local manifest with radosgw down" 200 \
    "$(http_status "$B_URL/v2/library/busyimg/manifests/latest" -H "$ACCEPT_OCI")"
st=$(http_status "$B_URL/v2/library/busyv2/blobs/$V2_CONFIG")
nm_check_error "B: a blob only the bucket holds, radosgw and the upstream down" \
    503 "$st" UNAVAILABLE
check_contains "the 503 says why" "shared object store cannot be reached" \
    "$(jq -r '.errors[0].message' "$NM_BODY")"
check_eq "the 503 says when to retry" 30 "$(hdr Retry-After)"
check_eq "B still answers" 200 "$(curl -s -o /dev/null -w '%{http_code}' "$B_URL/v2/")"
ceph_rgw_start
# A wrong object in the bucket is never served as the blob.
V2_OBJ=/nmshared/site/blobs/sha256/${V2_CONFIG#sha256:}
s3 GET "$V2_OBJ" -o "$NM_WORK/v2.good"
check_eq "the bucket holds busyv2's config" "$V2_CONFIG" "$(nm_sha256 "$NM_WORK/v2.good")"
printf '{"not": "the config"}' >"$NM_WORK/v2.bad"
check_eq "a wrong object put in the bucket" 200 "$(s3_put "$V2_OBJ" "$NM_WORK/v2.bad")"
sleep 3.5	# the bucket was down a moment ago: left alone meanwhile
st=$(http_status "$B_URL/v2/library/busyv2/blobs/$V2_CONFIG")
check_ne "B: a corrupt bucket object is not served whole" 200 "$st"
check_ne "B: no client gets the corrupt bytes" "$(nm_sha256 "$NM_WORK/v2.bad")" \
    "$(nm_sha256 "$NM_BODY")"
check_contains "B: the log names the mismatch" "digest" \
    "$(grep "$V2_CONFIG" "$B_LOG" | grep -i 'mismatch\|digest')"
check_eq "the right object put back" 200 "$(s3_put "$V2_OBJ" "$NM_WORK/v2.good")"
# A bucket that did not answer is left alone for a few seconds.
nm_until '[ "$(http_status "$B_URL/v2/library/busyv2/blobs/$V2_CONFIG")" = 200 ]' \
    150 || true
blob_ok "B: the same blob once radosgw is back" "$B_URL" library/busyv2 "$V2_CONFIG"
replica A


# --- A new replica with an empty disk streams a big blob from the bucket.
# Its bucket and credentials come from a config file's "s3" section, which
# wins over a wrong key in the environment.
cat >"$NM_WORK/c.json" <<EOF
{"s3": {"endpoint": "$S3_URL", "bucket": "nmshared", "prefix": "site",
        "access_key": "$S3_ACCESS", "secret_key": "$S3_SECRET"}}
EOF
AWS_SECRET_ACCESS_KEY=not-the-secret NM_FIXED_PORT="" nm_start \
    --upstream "docker.io=http://127.0.0.1:9" --config "$NM_WORK/c.json"
C_URL=$NM_URL
pids=""
for i in 1 2 3 4; do
	curl -s -o "$NM_WORK/c.big$i" --max-time 120 \
	    "$C_URL/v2/library/bigimg/blobs/$UP_BIG_LAYER" &
	pids="$pids $!"
done
# shellcheck disable=SC2086
wait $pids || true
n=0
for i in 1 2 3 4; do
	[ "$(nm_sha256 "$NM_WORK/c.big$i")" = "$UP_BIG_LAYER" ] && n=$((n + 1))
done
check_eq "C: 4 clients get the 24 MiB layer whole from the bucket" 4 "$n"
check_contains "C streamed it from the bucket" \
    "of docker.io/library/bigimg from the shared bucket" "$(cat "$NM_LOG")"
blob_ok "C: then from its own disk" "$C_URL" library/bigimg "$UP_BIG_LAYER"
nm_stop

n=0
for f in "$NM_WORK"/daemon*.log; do
	grep -qF "$S3_SECRET" "$f" && n=$((n + 1))
done
check_eq "no replica's log holds the S3 secret" 0 "$n"

# --- The README's nginx block in front of both replicas. ----------------
up_registry_start
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
	NGX=$NM_WORK/nginx
	PN=$(nm_free_port)
	mkdir -p "$NGX"
	{
		echo "daemon off; pid $NGX/nginx.pid; error_log $NGX/error.log;"
		echo "events {}"
		echo "http { access_log $NGX/access.log;"
		echo "client_body_temp_path $NGX/body; proxy_temp_path $NGX/proxy;"
		echo "fastcgi_temp_path $NGX/f; uwsgi_temp_path $NGX/u; scgi_temp_path $NGX/s;"
		nm_readme_block nginx 'upstream nixmirror' |
		    sed "s/replica-a\.example:5000/127.0.0.1:$PA/;
		    s/replica-b\.example:5000/127.0.0.1:$PB/;
		    s/listen 5000;/listen 127.0.0.1:$PN;/"
		echo "}"
	} >"$NGX/nginx.conf"
	NM_LOGS="$NM_LOGS $NGX/error.log"
	PATH=$PATH:/usr/sbin nginx -c "$NGX/nginx.conf" -p "$NGX" &
	nm_track $!
	nm_until '[ "$(curl -s -o /dev/null -w "%{http_code}" \
	    "http://127.0.0.1:$PN/v2/")" = 200 ]' 100 ||
	    fail "nginx does not answer"
	for img in busyimg bigtwo bigimg; do
		pull_ok "through nginx: skopeo pulls $img" "127.0.0.1:$PN" \
		    "library/$img:latest" "$NM_WORK/oci.$img"
	done
	replica_stop A
	pull_ok "through nginx with A stopped: skopeo pulls busyimg" \
	    "127.0.0.1:$PN" library/busyimg:latest "$NM_WORK/oci.busyimg"
else
	skip "no nginx (Debian nginx-light)"
fi

# --- --s3-redirect: blob GETs go to presigned URLs of the bucket. -------
NM_FIXED_PORT="" nm_start --upstream "docker.io=$UP_REG_URL" \
    --s3-endpoint "$S3_URL" --s3-bucket nmshared --s3-prefix site \
    --pkgs-repo "$REPO" --s3-redirect
D_URL=$NM_URL
D_LOG=$NM_LOG
D_DATA=$NM_DATA
L=${UP_BUSY_LAYER#sha256:}
st=$(curl -s -o /dev/null -D "$NM_WORK/d.h" -w '%{http_code}' \
    "$D_URL/v2/library/busyimg/blobs/$UP_BUSY_LAYER")
check_eq "D: a blob the bucket holds is a 307" 307 "$st"
loc=$(sed -n 's/^[Ll]ocation: *//p' "$NM_WORK/d.h" | tr -d '\r')
case $loc in
"$S3_URL/nmshared/site/blobs/sha256/$L?X-Amz-Algorithm=AWS4-HMAC-SHA256&"*)
	ok "D: to the blob's object in the bucket, presigned" ;;
*)	bad "D: the 307 leads to $loc" ;;
esac
check_eq "D: the URL holds no secret" 0 "$(printf '%s' "$loc" | grep -cF "$S3_SECRET" || true)"
check_eq "D: the presigned URL gives the blob's bytes" 200 \
    "$(curl -s -o "$NM_WORK/d.obj" -w '%{http_code}' "$loc")"
check_eq "D: they match the digest" "$UP_BUSY_LAYER" "$(nm_sha256 "$NM_WORK/d.obj")"
# A signature that is not the bucket's own is refused by radosgw.
sig=${loc##*X-Amz-Signature=}
c=0
[ "$(printf %.1s "$sig")" = 0 ] && c=1
badloc=${loc%X-Amz-Signature=*}X-Amz-Signature=$c${sig#?}
check_ne "the changed URL differs" "$loc" "$badloc"
check_eq "radosgw refuses a changed signature" 403 \
    "$(curl -s -o /dev/null -w '%{http_code}' "$badloc")"
check_eq "D: HEAD is answered by the mirror" 200 \
    "$(curl -s -I -o /dev/null -D "$NM_WORK/d.h" -w '%{http_code}' \
    "$D_URL/v2/library/busyimg/blobs/$UP_BUSY_LAYER")"
check_eq "D: with the blob's size" "$(wc -c <"$NM_WORK/d.obj" | tr -d ' ')" \
    "$(sed -n 's/^[Cc]ontent-[Ll]ength: *//p' "$NM_WORK/d.h" | tr -d '\r')"
st=$(http_status "$D_URL/v2/library/nosuchrepo/blobs/$UP_BUSY_LAYER")
check_ne "D: a repository without the blob's link gets no redirect" 307 "$st"
# A Nix image another replica built: its layers are redirected too.
NM_URL=$D_URL nm_manifest nix/shell/hello latest "$NM_WORK/mD" "$ACCEPT_OCI" >/dev/null
NL=$(jq -r '.layers[0].digest' "$NM_WORK/mD")
check_eq "D: a Nix layer in the bucket is a 307" 307 \
    "$(curl -s -o /dev/null -w '%{http_code}' "$D_URL/v2/nix/shell/hello/blobs/$NL")"
check_eq "D: following it gives the Nix layer" "$NL" \
    "$(curl -s -L "$D_URL/v2/nix/shell/hello/blobs/$NL" | sha256sum |
    sed 's/ .*//; s/^/sha256:/')"

# containerd pulls busyimg through D, and the layer's bytes come from radosgw.
HOSTS=$NM_WORK/certs.d
mkdir -p "$HOSTS/docker.io"
cat >"$HOSTS/docker.io/hosts.toml" <<EOF
server = "https://registry-1.docker.io"

[host."$D_URL"]
  capabilities = ["pull", "resolve"]
EOF
ctd_start "$NM_WORK/ctd"
REF=docker.io/library/busyimg:latest
ctr_do images pull --hosts-dir "$HOSTS" --snapshotter "$SNAP" "$REF"
ok "D: containerd pulls busyimg"
ctd_check_digest "containerd has upstream's manifest" "$REF" "$UP_BUSY_DG"
check_eq "ctr run prints the image's line" "$UP_BUSY_LINE" "$(ctd_run "$REF" tr1)"
check_contains "D sent containerd to the bucket for the layer" \
    "GET \"/v2/library/busyimg/blobs/$UP_BUSY_LAYER?ns=docker.io\" 307" \
    "$(cat "$D_LOG")"
check_eq "D never stored the layer's bytes" no \
    "$([ -e "$D_DATA/blobs/sha256/$(echo "$L" | cut -c1-2)/$L" ] && echo yes || echo no)"
ctd_stop kill
before=$(grep -c '" 307 0: to the shared bucket' "$D_LOG" || true)
# (busyimg: both its blobs are known to be in the bucket, as above.)
pull_ok "D: skopeo pulls busyimg through the redirect" "${D_URL#http://}" \
    library/busyimg:latest "$NM_WORK/oci.d"
check_eq "skopeo was sent to the bucket for its config and layer" 2 \
    "$(($(grep -c '" 307 0: to the shared bucket' "$D_LOG" || true) - before))"
# radosgw down: D serves as a mirror without a bucket would.
ceph_rgw_stop
blob_ok "D: with radosgw down, a blob it lacks comes from the upstream" \
    "$D_URL" library/third "$THIRD_LAYER"
nm_stop
