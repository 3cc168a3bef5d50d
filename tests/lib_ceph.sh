# tests/lib_ceph.sh: a one-machine Ceph cluster on loopback for the object
# store tests (sourced after lib.sh): one monitor, one OSD on memstore
# and radosgw's beast frontend, with an S3 user and no cephx.  Everything
# lives under the test's work dir and goes with it.
#
# ceph_start sets CEPH_CONF, S3_URL, S3_ACCESS, S3_SECRET; ceph_rgw_stop
# and ceph_rgw_start stop and start radosgw alone; s3 runs curl against
# the gateway with SigV4: s3 METHOD PATH [curl args...]; s3_put PATH FILE;
# s3_flushed URL waits until a replica has sent its queue.

CEPH_DIR=$NM_WORK/ceph
S3_ACCESS=nmtestaccesskey01
S3_SECRET=nmtestsecretkey0123456789abcdef0
# The SHA-256 of nothing, which RGW wants as x-amz-content-sha256.
S3_EMPTY=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855

ceph_start()
{
	need ceph-mon ceph-osd radosgw radosgw-admin monmaptool ceph uuidgen
	mkdir -p "$CEPH_DIR/mon" "$CEPH_DIR/osd" "$CEPH_DIR/rgw" "$CEPH_DIR/run"
	_fsid=$(uuidgen)
	_monport=$(nm_free_port)
	CEPH_RGW_PORT=$(nm_free_port)
	CEPH_CONF=$CEPH_DIR/ceph.conf
	S3_URL=http://127.0.0.1:$CEPH_RGW_PORT
	cat >"$CEPH_CONF" <<EOF
[global]
fsid = $_fsid
mon host = v2:127.0.0.1:$_monport
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
auth allow insecure global id reclaim = true
ms client mode = crc
ms cluster mode = crc
ms service mode = crc
ms mon client mode = crc
ms mon service mode = crc
ms mon cluster mode = crc
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon warn on pool no redundancy = false
osd objectstore = memstore
memstore device bytes = 2147483648
osd memory target = 536870912
osd crush chooseleaf type = 0
run dir = $CEPH_DIR/run
admin socket = $CEPH_DIR/run/\$cluster-\$name.asok
log file = $CEPH_DIR/\$name.log
pid file = $CEPH_DIR/run/\$name.pid
keyring = /dev/null
[mon.a]
mon data = $CEPH_DIR/mon
[osd.0]
osd data = $CEPH_DIR/osd
[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:$CEPH_RGW_PORT
rgw data = $CEPH_DIR/rgw
rgw dns name = 127.0.0.1
EOF
	monmaptool --create --fsid "$_fsid" \
	    --addv a "[v2:127.0.0.1:$_monport]" "$CEPH_DIR/monmap" >/dev/null ||
	    fail "monmaptool"
	ceph-mon -c "$CEPH_CONF" --mkfs -i a --monmap "$CEPH_DIR/monmap" \
	    >/dev/null 2>&1 || fail "ceph-mon --mkfs"
	ceph-mon -c "$CEPH_CONF" -i a || fail "ceph-mon did not start"
	ceph_track mon.a
	NM_LOGS="$NM_LOGS $CEPH_DIR/mon.a.log $CEPH_DIR/osd.0.log $CEPH_DIR/client.rgw.log"
	_uuid=$(uuidgen)
	_id=$(timeout 60 ceph -c "$CEPH_CONF" osd new "$_uuid") ||
	    fail "ceph osd new"
	ceph-osd -c "$CEPH_CONF" -i "$_id" --mkfs --osd-uuid "$_uuid" \
	    >/dev/null 2>&1 || fail "ceph-osd --mkfs"
	ceph-osd -c "$CEPH_CONF" -i "$_id" >/dev/null 2>&1 ||
	    fail "ceph-osd did not start"
	ceph_track "osd.$_id"
	ceph_rgw_start
	timeout 60 radosgw-admin -c "$CEPH_CONF" -n client.rgw user create \
	    --uid=nm --display-name=nm --access-key="$S3_ACCESS" \
	    --secret="$S3_SECRET" >/dev/null 2>&1 || fail "radosgw-admin user create"
}

# Remembers a daemon's pid (from its pid file) for the trap.
ceph_track()
{
	nm_until "test -s '$CEPH_DIR/run/$1.pid'" 100 ||
	    fail "ceph $1 wrote no pid file"
	nm_track "$(cat "$CEPH_DIR/run/$1.pid")"
}

ceph_rgw_start()
{
	rm -f "$CEPH_DIR/run/client.rgw.pid"
	radosgw -c "$CEPH_CONF" -n client.rgw || fail "radosgw did not start"
	ceph_track client.rgw
	nm_until "curl -sf -o /dev/null '$S3_URL/'" 600 ||
	    fail "radosgw does not answer in 60 s"
}

ceph_rgw_stop()
{
	_p=$(cat "$CEPH_DIR/run/client.rgw.pid")
	kill -9 "$_p"
	nm_until "! kill -0 $_p" 100 || fail "radosgw still runs"
	nm_untrack "$_p"
}

# curl with SigV4 against the gateway: s3 METHOD PATH [curl args...].
s3()
{
	_m=$1 _p=$2
	shift 2
	curl -s -X "$_m" --aws-sigv4 "aws:amz:us-east-1:s3" \
	    --user "$S3_ACCESS:$S3_SECRET" -H "x-amz-content-sha256: $S3_EMPTY" \
	    "$@" "$S3_URL$_p"
}

# Writes a file as an object: s3_put PATH FILE; prints the status.
s3_put()
{
	curl -s -X PUT --aws-sigv4 "aws:amz:us-east-1:s3" \
	    --user "$S3_ACCESS:$S3_SECRET" \
	    -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" \
	    --data-binary "@$2" -o /dev/null -w '%{http_code}' "$S3_URL$1"
}

# The items a replica still has for the bucket (its /metrics).
s3_pending()
{
	curl -s "$1/metrics" | awk '$1 == "nixmirror_s3_pending" { print $2 }'
}

# Waits (60 s at most) until the replica at URL has sent everything to
# the bucket: s3_flushed URL.
s3_flushed()
{
	_flush_url=$1
	nm_until '[ "$(s3_pending "$_flush_url")" = 0 ]' 600 ||
	    fail "$1 still has $(s3_pending "$1") items for the bucket after 60 s"
}
